package vmm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm/acpi"
	"github.com/pmvm/pmvm/vmm/x86"
)

// Platform names the machine model pmvm builds (layout, devices, ports). A
// state file saved on another platform is refused.
const Platform = "pmvm-pc/1"

// Section names and versions. Names come from the machine's topology, never
// from creation order, so a renumbered device cannot load another's state;
// each device's section is its platform table name (platform.go).
const (
	secMachine = "machine"
	secClock   = "clock"

	recordVersion = 1
)

func memorySection(name string) string { return "memory/" + name }

func vcpuSection(i int) string { return fmt.Sprintf("vcpu/%d", i) }

// vcpuRecord is one vCPU as S3 leaves it: reset, its registers lost by
// design (ACPI S3). The boot vCPU starts at the FACS waking vector, the
// others wait for INIT-SIPI from the guest. Restart mode, which keeps a
// running guest, will add the registers here.
type vcpuRecord struct {
	APICID uint32 `json:"apic_id"`
	Boot   bool   `json:"boot"`
	State  string `json:"state"`
}

const (
	vcpuBootState  = "reset: starts at the FACS waking vector"
	vcpuOtherState = "reset: waits for INIT-SIPI"
)

// vcpuRecords describes n vCPUs as a reboot-mode save leaves them; APIC
// IDs are the vCPU indexes (the MADT's).
func vcpuRecords(n int) []vcpuRecord {
	out := make([]vcpuRecord, n)
	for i := range out {
		out[i] = vcpuRecord{APICID: uint32(i), Boot: i == 0, State: vcpuOtherState}
	}
	if n > 0 {
		out[0].State = vcpuBootState
	}
	return out
}

// machineRecord describes the saved machine as a whole.
type machineRecord struct {
	Platform string              `json:"platform"`
	Spec     configs.MachineSpec `json:"spec"`
	RAM      []x86.RAMRange      `json:"ram"`
	RSDP     uint64              `json:"rsdp"`
	FACS     uint64              `json:"facs"`
	RunState RunState            `json:"runstate"`
}

// clockRecord is the guest's kvmclock and the host's wall time at the same
// moment: a resume advances the clock by the wall time that passed.
type clockRecord struct {
	KVMClockNs   uint64 `json:"kvmclock_ns"`
	HostUnixNano int64  `json:"host_unix_ns"`
}

// CheckSaveable says whether this VM could be saved to path, before anything
// is done to the guest: a refusal found after suspending it would leave a
// guest stopped for nothing.
func (m *Machine) CheckSaveable(path string) error {
	if m.cfg.RunMode() != memspec.ModeReboot {
		return fmt.Errorf("VM %q is in mode %q: only mode \"reboot\" VMs are saved to a state file (its memory must survive pmvm and the host); the guest was not suspended", m.cfg.Name, m.cfg.RunMode())
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("state file directory %s does not exist or is not a directory: create it first; the guest was not suspended", dir)
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return fmt.Errorf("state file directory %s is not writable (%v); the guest was not suspended", dir, err)
	}
	// A running guest sets its waking vector as it suspends: SaveState
	// checks it then. An already suspended one is checked now.
	if m.RunState() == StateSuspended {
		if err := m.checkResumable(); err != nil {
			return fmt.Errorf("%w; the guest was left as it was", err)
		}
	}
	return nil
}

// checkResumable refuses a suspended guest pmvm could not wake from a
// state file, as QEMU's migration blockers refuse a VM it could not
// migrate: found at the wake after a host update, the guest would be lost.
func (m *Machine) checkResumable() error {
	if _, err := m.wakingVector(); err != nil {
		return fmt.Errorf("VM %q cannot be saved: %v, so it could not be resumed from a state file (a host update refuses it)", m.cfg.Name, err)
	}
	return nil
}

// SaveState writes the suspended machine's state to path (atomically and
// durably) and leaves the machine in StateSaving; the caller then stops it
// with Finish. Only a suspended guest can be saved: its RAM is left where it
// is and its devices are quiescent.
func (m *Machine) SaveState(path, version string) error {
	if m.cfg.RunMode() != memspec.ModeReboot {
		return fmt.Errorf("VM %q is in mode %q: only mode \"reboot\" VMs are saved to a state file", m.cfg.Name, m.cfg.RunMode())
	}
	m.mu.Lock()
	if m.runstate != StateSuspended {
		st := m.runstate
		m.mu.Unlock()
		return fmt.Errorf("the guest is %s: only a suspended guest can be saved (pmvm suspend first)", st)
	}
	// The guest is parked and wrote its waking vector before SLP_EN:
	// check it before anything is written.
	if err := m.checkResumable(); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("%w; nothing was written", err)
	}
	m.setStateLocked(StateSaving)
	m.mu.Unlock()

	err := m.writeState(path, version)
	m.mu.Lock()
	stopped := m.isStopping()
	switch {
	case stopped:
		// Stopped (pmvm stop, SIGTERM) while the file was being written:
		// the machine stays stopping, whatever became of the file.
	case err != nil:
		m.setStateLocked(StateSuspended)
	default:
		m.setStateLocked(StateSaved)
	}
	m.mu.Unlock()
	if stopped {
		if err != nil {
			m.log.Warn().Err(err).Str("state", path).Msg("pmvm was stopped during the save and the state file was not written: the guest is lost once pmvm exits")
		} else {
			m.log.Warn().Str("state", path).Msg("pmvm was stopped during the save; the state file was written in full and resumes the guest")
		}
	}
	return err
}

func (m *Machine) writeState(path, version string) error {
	clk, err := m.vm.Clock()
	if err != nil {
		return err
	}
	f, err := m.stateFile(version, clk.Clock, time.Now())
	if err != nil {
		return fmt.Errorf("build state: %w", err)
	}
	if err := m.addGenerations(f); err != nil {
		return fmt.Errorf("build state: %w", err)
	}
	if err := m.addFingerprint(f); err != nil {
		return fmt.Errorf("build state: %w", err)
	}
	if err := m.writeStateFile(path, f); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	return nil
}

// stateFile is the suspended machine as a state file, its kvmclock read at
// host time now: everything but the clock comes from the machine's own
// fields and its platform table's devices, none from KVM.
func (m *Machine) stateFile(version string, kvmclock uint64, now time.Time) (*state.File, error) {
	f := &state.File{Header: state.Header{
		Created:           now,
		PMVMVersion:       version,
		VMName:            m.cfg.Name,
		Mode:              memspec.ModeReboot,
		ConfigFingerprint: m.cfg.Machine().Fingerprint(),
	}}
	add := func(name string, v any) error { return f.AddJSON(name, recordVersion, v) }
	errs := []error{
		add(secMachine, machineRecord{Platform: Platform, Spec: m.cfg.Machine(), RAM: m.ram,
			RSDP: m.tables.RSDP, FACS: m.tables.FACS, RunState: StateSuspended}),
		add(secClock, clockRecord{KVMClockNs: kvmclock, HostUnixNano: now.UnixNano()}),
		saveDevices(f, m.devs),
	}
	for i, r := range m.regions {
		errs = append(errs, add(memorySection(m.cfg.Memory[i].Name), r.Identity()))
	}
	for i, v := range vcpuRecords(m.cfg.VCPUs) {
		errs = append(errs, add(vcpuSection(i), v))
	}
	return f, errors.Join(errs...)
}

// Finish stops a saved machine: its guest lives on in memory and the state file.
func (m *Machine) Finish() { m.stop(OutcomeSaved, nil, "guest saved to its state file") }

// Incoming is a state file that matched a config. It is checked before any
// guest memory is mapped, so a refusal never touches the guest.
type Incoming struct {
	Path string
	// Memory are the verdicts on the backings the check used, when they
	// accept every block: pass them to New (Options.Memory).
	Memory *pmem.Report
	file   *state.File
	rec    machineRecord
	gens   []state.Generation // the memory's generations at save; nil in older files
}

// CheckIncoming reads the state file at path and checks it against cfg: the
// file itself, the VM it belongs to, the machine-defining config fields
// (explained one by one) and the identity of every memory backing. mem are
// the verdicts Preflight made on the backings; nil: it probes them.
func CheckIncoming(cfg *configs.VM, path string, mem *pmem.Report) (*Incoming, error) {
	f, err := state.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if prev := state.LastResumed(path); prev != "" {
			err = fmt.Errorf("%s was already resumed (it is now %s) and its guest has run since: resuming that old state again would corrupt the guest, so it cannot be done; nothing was mapped", path, prev)
		}
		// A save killed before its rename: say so, never use it silently.
		if note := state.LeftoverNote(path); note != "" {
			err = fmt.Errorf("%w;\n%s\nNothing was mapped, the guest's memory is untouched", err, note)
		}
	}
	if err != nil {
		return nil, err
	}
	refuse := refusal(cfg, path)
	rec, saved, err := checkSaved(cfg, path, f)
	if err != nil {
		return nil, err
	}
	specs := MemorySpecs(cfg)
	// What matters here is that every backing could be looked at and is
	// the saved memory; refusing a mode is Preflight's and New's.
	mem, memErr := memoryVerdicts(specs, mem)
	if mem == nil {
		return nil, refuse("%v", memErr)
	}
	aligns := make([]uint64, len(specs))
	for i, spec := range specs {
		b := mem.Blocks[i]
		if b.Identity == nil {
			return nil, refuse("memory block %q: %s", spec.Name, b.Reason)
		}
		if b.Missing {
			return nil, refuse("memory block %q: %s does not exist; the guest's memory is not there", spec.Name, spec.Backing)
		}
		if diff := saved[i].SameMemory(*b.Identity); len(diff) > 0 {
			return nil, refuse("memory block %q on %s is not the memory the guest was saved in:\n  %s", spec.Name, spec.Backing, strings.Join(diff, "\n  "))
		}
		aligns[i] = b.Align
	}
	// The same config on the same memory must give the same guest-physical
	// layout: the guest's page tables and e820 map hold the saved one.
	ram, err := placeRAM(cfg, aligns)
	if err != nil {
		return nil, refuse("%v", err)
	}
	if diff := ramLayoutDiff(cfg, rec.RAM, ram); len(diff) > 0 {
		return nil, refuse("%s", layoutRefusal(diff))
	}
	gens, err := savedGenerations(f)
	if err != nil {
		return nil, err
	}
	if _, err := checkGenerations(gens); err != nil {
		return nil, refuse("%v", err)
	}
	in := &Incoming{Path: path, file: f, rec: rec, gens: gens}
	if memErr == nil {
		in.Memory = mem // else New probes again, and refuses with pmem's error
	}
	return in, nil
}

// refusal formats CheckIncoming's refusals of the file at path for cfg.
func refusal(cfg *configs.VM, path string) func(format string, a ...any) error {
	return func(format string, a ...any) error {
		return fmt.Errorf("%s cannot resume VM %q: %s; nothing was mapped, the guest's memory is untouched", path, cfg.Name, fmt.Sprintf(format, a...))
	}
}

// checkSaved is the part of CheckIncoming that reads only the file: its
// mode and VM, the machine record against cfg, the vCPU sections and the
// memory sections, whose saved identities it returns (one per block of
// cfg) for the caller to compare with the backings on this host.
func checkSaved(cfg *configs.VM, path string, f *state.File) (machineRecord, []pmem.Identity, error) {
	refuse := refusal(cfg, path)
	var rec machineRecord
	if f.Header.Mode != memspec.ModeReboot {
		return rec, nil, refuse("it was saved in mode %q; this pmvm resumes mode \"reboot\" files", f.Header.Mode)
	}
	if f.Header.VMName != cfg.Name {
		return rec, nil, refuse("it holds VM %q", f.Header.VMName)
	}
	sec, err := f.Need(secMachine, recordVersion)
	if err != nil {
		return rec, nil, err
	}
	if err := sec.DecodeJSON(&rec); err != nil {
		return rec, nil, err
	}
	if rec.Platform != Platform {
		return rec, nil, refuse("it was saved on platform %q, this pmvm builds %q", rec.Platform, Platform)
	}
	if diff := rec.Spec.Diff(cfg.Machine()); len(diff) > 0 {
		return rec, nil, refuse("the config does not describe the saved machine:\n  %s", strings.Join(diff, "\n  "))
	}
	if f.Header.ConfigFingerprint != rec.Spec.Fingerprint() {
		return rec, nil, refuse("its header fingerprint does not match its machine record: the file was not written by pmvm")
	}
	if rec.RunState != StateSuspended {
		return rec, nil, refuse("the guest was saved %s, not suspended", rec.RunState)
	}
	saved := make([]pmem.Identity, len(cfg.Memory))
	for i, b := range cfg.Memory {
		s, err := f.Need(memorySection(b.Name), recordVersion)
		if err != nil {
			return rec, nil, err
		}
		if err := s.DecodeJSON(&saved[i]); err != nil {
			return rec, nil, err
		}
	}
	// vcpu/N sections (absent from files of pmvm before they existed, which
	// saved the same reset vCPUs) must describe the machine being resumed.
	want := vcpuRecords(cfg.VCPUs)
	for i := 0; ; i++ {
		if _, ok := f.Section(vcpuSection(i)); !ok {
			if i > 0 && i < len(want) {
				return rec, nil, refuse("it has vCPU sections vcpu/0..vcpu/%d but the machine has %d vCPUs", i-1, len(want))
			}
			break
		}
		if i >= len(want) {
			return rec, nil, refuse("it has section %s but the machine has %d vCPUs", vcpuSection(i), len(want))
		}
		s, err := f.Need(vcpuSection(i), recordVersion)
		if err != nil {
			return rec, nil, err
		}
		var v vcpuRecord
		if err := s.DecodeJSON(&v); err != nil {
			return rec, nil, refuse("section %s: %v", vcpuSection(i), err)
		}
		if v != want[i] {
			return rec, nil, refuse("section %s is %+v, want %+v: this pmvm resumes only vCPUs reset by S3", vcpuSection(i), v, want[i])
		}
	}
	return rec, saved, nil
}

// Restore loads an incoming state into a machine built by New (instead of
// Boot): devices, clock and the ACPI table addresses. Nothing is written to
// guest memory: the tables, the kernel and the guest are already there. The
// machine is left suspended; Run starts its vCPUs parked and Wake resumes it.
func (m *Machine) Restore(in *Incoming) error {
	m.mu.Lock()
	if m.runstate != StateCreated {
		st := m.runstate
		m.mu.Unlock()
		return fmt.Errorf("cannot restore into a machine that is %s", st)
	}
	m.mu.Unlock()
	if diff := ramLayoutDiff(m.cfg, in.rec.RAM, m.ram); len(diff) > 0 {
		return fmt.Errorf("cannot restore %s: %s", in.Path, layoutRefusal(diff))
	}
	// Before anything changes (it only reads): is the guest's memory still there?
	if err := m.checkFingerprint(in.file); err != nil {
		return fmt.Errorf("cannot restore %s: %w", in.Path, err)
	}

	// Rebuild the tables only to learn where they are (Build is
	// deterministic); copying them would erase the guest's waking vector.
	tables, err := acpi.Build(m.acpiConfig(), x86.ACPITablesAddr)
	if err != nil {
		return err
	}
	if tables.FACS != in.rec.FACS || tables.RSDP != in.rec.RSDP {
		return fmt.Errorf("ACPI tables would move (FACS %#x, saved at %#x): the guest could not find its waking vector", tables.FACS, in.rec.FACS)
	}
	m.tables = tables

	var clk clockRecord
	sec, err := in.file.Need(secClock, recordVersion)
	if err != nil {
		return err
	}
	if err := sec.DecodeJSON(&clk); err != nil {
		return err
	}
	if err := restoreDevices(in.file, m.devs); err != nil {
		return err
	}
	// The guest slept for as long as the host took: kvmclock moves on by
	// the wall time since the save, never backwards.
	elapsed := time.Now().UnixNano() - clk.HostUnixNano
	if elapsed < 0 {
		elapsed = 0
	}
	c, err := m.vm.Clock()
	if err != nil {
		return err
	}
	c.Clock, c.Flags = clk.KVMClockNs+uint64(elapsed), 0
	if err := m.vm.SetClock(c); err != nil {
		return err
	}
	// Checked again now that this pmvm holds the backings' locks; the
	// state is spent on the memory only by SpendState, right before the
	// wake: a pmvm killed before then leaves the state resumable.
	if _, err := checkGenerations(in.gens); err != nil {
		return fmt.Errorf("cannot restore %s: %w", in.Path, err)
	}
	m.restoredGens = in.gens
	m.mu.Lock()
	m.setStateLocked(StateSuspended)
	m.mu.Unlock()
	m.log.Info().Str("state", in.Path).Dur("asleep", time.Duration(elapsed)).Msg("state restored; guest is suspended")
	return nil
}
