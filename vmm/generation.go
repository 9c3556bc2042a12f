package vmm

import (
	"errors"
	"fmt"

	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/state"
)

// A state file is spent by the memory's generation, not by its name (see
// state.Generation): the save records each backing's current generation,
// CheckIncoming refuses a state of another generation before anything is
// mapped, and Restore checks again under the backings' locks and advances
// them, before the vCPUs run.

// addGenerations records in f the current generation of each backing that
// outlives pmvm, making a record at 0 where there is none.
func (m *Machine) addGenerations(f *state.File) error {
	var gens []state.Generation
	for i, r := range m.regions {
		key := r.Identity().GenerationKey()
		if key == "" {
			continue
		}
		gen, known, err := state.CurrentGeneration(key)
		if err != nil {
			return err
		}
		if !known {
			if err := state.SetGeneration(key, 0); err != nil {
				return err
			}
		}
		gens = append(gens, state.Generation{Block: m.cfg.Memory[i].Name, Key: key, Generation: gen})
	}
	if len(gens) == 0 {
		return nil
	}
	return f.AddJSON(state.GenerationSection, recordVersion, gens)
}

// savedGenerations reads the generations a state file was saved at; nil
// for a file from before they were recorded.
func savedGenerations(f *state.File) ([]state.Generation, error) {
	if _, ok := f.Section(state.GenerationSection); !ok {
		return nil, nil
	}
	sec, err := f.Need(state.GenerationSection, recordVersion)
	if err != nil {
		return nil, err
	}
	var gens []state.Generation
	if err := sec.DecodeJSON(&gens); err != nil {
		return nil, err
	}
	return gens, nil
}

// checkGenerations refuses gens unless each is its backing's current
// generation; a backing without a record cannot tell and passes (named in
// unknown).
func checkGenerations(gens []state.Generation) (unknown []string, err error) {
	for _, g := range gens {
		cur, known, err := state.CurrentGeneration(g.Key)
		if err != nil {
			return nil, fmt.Errorf("memory block %q: %w", g.Block, err)
		}
		if !known {
			unknown = append(unknown, g.Block)
			continue
		}
		if cur != g.Generation {
			return nil, fmt.Errorf("it was already resumed: memory block %q is at generation %d (%s) and this state was saved at generation %d, so the guest has run in that memory since this state was saved (this is a resumed state file, a copy or link of one, or an older save); resuming it would corrupt the guest, so it cannot be done",
				g.Block, cur, state.GenerationPath(g.Key), g.Generation)
		}
	}
	return unknown, nil
}

// spendGenerations checks gens again (the caller holds the backings'
// locks, so no other pmvm can resume over them meanwhile) and advances
// each backing's generation: from now on this state, and every copy of it,
// is spent.
func (m *Machine) spendGenerations(gens []state.Generation) error {
	unknown, err := checkGenerations(gens)
	if err != nil {
		return err
	}
	if len(unknown) > 0 {
		m.log.Warn().Strs("blocks", unknown).Str("dir", state.GenerationDir).Msg("no generation record for this memory (was the directory wiped?): cannot tell whether this state was resumed before; resuming it")
	}
	for _, g := range gens {
		if err := state.SetGeneration(g.Key, g.Generation+1); err != nil {
			return fmt.Errorf("memory block %q: %w; the guest was not woken", g.Block, err)
		}
	}
	return nil
}

// SpendState spends the restored state on the memory (advances each
// backing's generation), so that it and every copy of it can never be
// resumed again. The resume calls it last before the wake, once the state
// file is moved aside: a pmvm killed before it leaves the state resumable.
func (m *Machine) SpendState() error { return m.spendGenerations(m.restoredGens) }

// UnspendState puts the generations SpendState advanced back, for a wake
// that failed before any vCPU ran: the state may then be resumed again.
func (m *Machine) UnspendState() error {
	var errs []error
	for _, g := range m.restoredGens {
		if err := state.SetGeneration(g.Key, g.Generation); err != nil {
			errs = append(errs, fmt.Errorf("memory block %q: %w", g.Block, err))
		}
	}
	return errors.Join(errs...)
}

// NewGeneration spends every state saved over this machine's memory before
// a cold boot overwrites it: each backing's generation advances (a backing
// without a record gets generation 1, which no save has recorded). Only
// mode "reboot" VMs have state files; a record that cannot be written
// refuses the boot, as it would refuse this VM's save later.
func (m *Machine) NewGeneration() error {
	if m.cfg.RunMode() != memspec.ModeReboot {
		return nil
	}
	for i, r := range m.regions {
		key := r.Identity().GenerationKey()
		if key == "" {
			continue
		}
		gen, _, err := state.CurrentGeneration(key)
		if err != nil {
			return fmt.Errorf("memory block %q: %w", m.cfg.Memory[i].Name, err)
		}
		if err := state.SetGeneration(key, gen+1); err != nil {
			return fmt.Errorf("memory block %q: %w; nothing was booted (a VM in mode \"reboot\" needs its memory's generation recorded, so that no state saved before this boot can be resumed over it)", m.cfg.Memory[i].Name, err)
		}
	}
	return nil
}
