package lab

import "fmt"

// PmvmRunScenario is TestLabBoot's scenario: run the guest under pmvm.
const PmvmRunScenario = `/bin/pmvm run /lab/guest.toml; echo "PMVM-LAB pmvm-exit=$?"
`

// KVMCheckScenario only shows that nested KVM works in L1.
const KVMCheckScenario = `ls -l /dev/kvm
echo "PMVM-LAB nested=$(cat /sys/module/kvm_amd/parameters/nested)"
echo "PMVM-LAB npt=$(cat /sys/module/kvm_amd/parameters/npt)"
`

// Standard describes the usual lab: the 6.1 kernel in L1 and L2, the default
// guest init, pmvm and a guest config.
type Standard struct {
	Scenario    string    // default PmvmRunScenario
	GuestConfig *VMConfig // default DefaultGuestConfig()
	Guest       GuestSpec // default: GuestInit
	NoPmvm      bool      // do not build/include pmvm (lab self-checks)
	Pmvm        string    // use this binary instead of building ./cmd/pmvm
	KernelPkg   string    // default Kernel61
}

// Built is what Standard produced.
type Built struct {
	Kernel *Kernel
	Guest  *GuestImage
	Host   *HostImage
}

// BuildStandard fetches, extracts and builds everything for a standard lab run.
func (l *Lab) BuildStandard(s Standard) (*Built, error) {
	if s.Scenario == "" {
		s.Scenario = PmvmRunScenario
	}
	if s.GuestConfig == nil {
		c := DefaultGuestConfig()
		s.GuestConfig = &c
	}
	if s.KernelPkg == "" {
		s.KernelPkg = Kernel61
	}
	k, err := l.Kernel(s.KernelPkg)
	if err != nil {
		return nil, err
	}
	g, err := l.Guest(k, s.Guest)
	if err != nil {
		return nil, err
	}
	pmvm := s.Pmvm
	if pmvm == "" && !s.NoPmvm {
		if pmvm, err = l.BuildPmvm(); err != nil {
			return nil, fmt.Errorf("%w\n(the lab needs a static pmvm from ./cmd/pmvm)", err)
		}
	}
	h, err := l.Host(HostSpec{
		Kernel:      k,
		Pmvm:        pmvm,
		Guest:       g,
		GuestConfig: s.GuestConfig,
		Scenario:    s.Scenario,
	})
	if err != nil {
		return nil, err
	}
	return &Built{Kernel: k, Guest: g, Host: h}, nil
}
