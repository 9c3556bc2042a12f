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
// reported as such even on a host without KVM.
func Preflight(cfg *configs.VM, resuming bool) error {
	if _, err := pmem.Verdicts(MemorySpecs(cfg)...); err != nil {
		return err
	}
	if !resuming {
		if err := CheckBootFiles(cfg.Boot); err != nil {
			return err
		}
	}
	sys, err := kvm.OpenSystem()
	if err != nil {
		return err
	}
	return sys.Close()
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
