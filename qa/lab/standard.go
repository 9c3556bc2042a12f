package lab

import "fmt"

// PmvmRunScenario is TestLabBoot's scenario: run the guest under pmvm.
var PmvmRunScenario = script("pmvm-run-scenario.sh")

// KVMCheckScenario only shows that nested KVM works in L1.
var KVMCheckScenario = script("kvm-check-scenario.sh")

// Standard describes the usual lab: the 6.1 kernel in L1 and L2, the default
// guest init, pmvm and a guest config.
type Standard struct {
	Scenario    string    // default PmvmRunScenario
	GuestConfig *VMConfig // default DefaultGuestConfig()
	Guest       GuestSpec // default: GuestInit
	NoPmvm      bool      // do not build/include pmvm (lab self-checks)
	Pmvm        string    // use this binary instead of building ./cmd/pmvm
	KernelPkg   string    // default Kernel61
	// Configs are more VM configs for the lab host, at /lab/<key>.toml.
	Configs map[string]*VMConfig
	// Dax: the lab host can make /dev/dax0.0 (HostSpec.Dax).
	Dax bool
	// HostName names the lab host image in <cache>/images (default "host").
	HostName string
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
		Name:        s.HostName,
		Kernel:      k,
		Pmvm:        pmvm,
		Guest:       g,
		GuestConfig: s.GuestConfig,
		Scenario:    s.Scenario,
		Configs:     s.Configs,
		Dax:         s.Dax,
	})
	if err != nil {
		return nil, err
	}
	return &Built{Kernel: k, Guest: g, Host: h}, nil
}

// DaxStandard is the device-dax lab (TestLabDax): the lab host makes
// /dev/dax0.0 and runs DaxScenario; the guest (RAM on the device) runs
// LocateGuestInit(seed); /lab/anon-reboot.toml is AnonRebootConfig.
func DaxStandard(seed uint64) Standard {
	dax := DaxGuestConfig()
	anon := AnonRebootConfig()
	return Standard{
		HostName:    "host-dax",
		Scenario:    DaxScenario,
		GuestConfig: &dax,
		Guest:       GuestSpec{Name: "guest-dax", Pattern: true, Init: LocateGuestInit(seed)},
		Configs:     map[string]*VMConfig{"anon-reboot": &anon},
		Dax:         true,
	}
}

// SuspendStandard is the S3 lab (TestLabSuspendWake): a 2-vCPU, 256 MiB
// guest with qemu-ga running PMGuestInit (pattern seed, RTC alarm after the
// plan's pmvm-driven cycles, qemu-ga stopped after the RTC cycle) and
// SuspendScenario(p) in the lab host.
func SuspendStandard(seed uint64, p SuspendPlan) Standard {
	if p.Cycles == 0 {
		p.Cycles = 3
	}
	cfg := DefaultGuestConfig()
	cfg.Memory[0].Size = "256MiB"
	g := PMGuest{Seed: seed, RTCSeconds: 10}
	last := p.Cycles
	if p.RTC {
		g.RTCAfter = p.Cycles
		last++
	}
	if p.NoAgent {
		g.StopAgentAfter = last
	}
	return Standard{
		HostName:    "host-pm",
		Scenario:    SuspendScenario(p),
		GuestConfig: &cfg,
		Guest:       GuestSpec{Name: "guest-pm", Agent: true, Pattern: true, Init: PMGuestInit(g)},
	}
}
