package vmm

import (
	"fmt"
	"os"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/vmm/kvm"
	"github.com/pmvm/pmvm/vmm/x86"
)

// Preflight checks, before anything is created or mapped, what would make
// the VM fail to start: every memory block can honour the VM's mode (a
// probe, nothing created), the kernel is a bzImage and the initrd a
// readable file (not for a resume: the guest wakes from its own memory),
// and, last, that this host has a usable KVM. A bad config or file is
// reported as such even on a host without KVM. It returns the memory
// verdicts, for CheckIncoming and New (Options.Memory): they do not probe
// the backings again.
func Preflight(cfg *configs.VM, resuming bool) (*pmem.Report, error) {
	rep, err := pmem.Verdicts(MemorySpecs(cfg)...)
	if err != nil {
		return nil, err
	}
	if !resuming {
		if err := CheckBootFiles(cfg.Boot); err != nil {
			return nil, err
		}
	}
	sys, err := kvm.OpenSystem()
	if err != nil {
		return nil, err
	}
	return &rep, sys.Close()
}

// CheckBootFiles checks that the kernel parses as a 64-bit bzImage and
// that the initrd, if any, is a readable regular file.
func CheckBootFiles(b configs.Boot) error {
	image, err := os.ReadFile(b.Kernel)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	if _, err := x86.ParseBzImage(image); err != nil {
		return fmt.Errorf("kernel %s: %w", b.Kernel, err)
	}
	if b.Initrd == "" {
		return nil
	}
	f, err := os.Open(b.Initrd)
	if err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("initrd: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("initrd %s is not a regular file (%v)", b.Initrd, st.Mode().Type())
	}
	return nil
}

// memoryVerdicts returns given, the verdicts an earlier step made on
// specs (Preflight, CheckIncoming), or probes the backings now, when there
// are none; the error then names every block refused. Backings are opened,
// and classified through the descriptor that is mapped, only by pmem.Open.
func memoryVerdicts(specs []pmem.Spec, given *pmem.Report) (*pmem.Report, error) {
	if given == nil {
		rep, err := pmem.Verdicts(specs...)
		return &rep, err
	}
	if len(given.Blocks) != len(specs) {
		return nil, fmt.Errorf("the memory verdicts cover %d blocks but the config has %d: pass the verdicts made for this config", len(given.Blocks), len(specs))
	}
	for i, b := range given.Blocks {
		switch {
		case b.Block != specs[i].Name:
			return nil, fmt.Errorf("the memory verdicts name block %q where the config has %q: pass the verdicts made for this config", b.Block, specs[i].Name)
		case !b.OK:
			return nil, fmt.Errorf("memory block %q (%s): %s", b.Block, b.Backing, b.Reason)
		}
	}
	return given, nil
}
