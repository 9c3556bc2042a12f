package lab

import (
	"strconv"
	"strings"
)

// RebootStandard is TestLabRebootResume's lab: the S3 guest (qemu-ga, the
// pattern daemon, the resume loop) with its RAM on /dev/dax0.0 in mode
// "reboot", and RebootScenario(cycles) in the lab host.
func RebootStandard(seed uint64, cycles int) Standard {
	cfg := DaxGuestConfig()
	// Fault-case configs: the same VM with one machine-defining field
	// changed, another VM's name, and a backing that does not exist.
	vcpus := DaxGuestConfig()
	vcpus.VCPUs = 1
	other := DaxGuestConfig()
	other.Name = "otherguest"
	other.Agent = "/run/pmvm/otherguest/agent.sock"
	other.Control = "/run/pmvm/otherguest/control.sock"
	missing := DaxGuestConfig()
	missing.Memory[0].Backing = "/dev/dax9.0"
	return Standard{
		HostName:    "host-reboot",
		Scenario:    RebootScenario(cycles),
		GuestConfig: &cfg,
		Guest:       GuestSpec{Name: "guest-reboot", Agent: true, Pattern: true, Init: PMGuestInit(PMGuest{Seed: seed})},
		Configs:     map[string]*VMConfig{"wrong-vcpus": &vcpus, "other-vm": &other, "missing-dax": &missing},
		Dax:         true,
	}
}

// RebootFaults are the refused resumes RebootScenario tries after the
// first save: tag, the pmvm run arguments, and what the refusal must say.
var RebootFaults = []struct{ Tag, Args, Want string }{
	{"truncated", "/lab/guest.toml --incoming /tmp/truncated.state", "truncated"},
	{"corrupted", "/lab/guest.toml --incoming /tmp/corrupted.state", "checksum"},
	{"newer-format", "/lab/guest.toml --incoming /tmp/newer.state", "newer than this pmvm"},
	{"other-vm", "/lab/other-vm.toml --incoming /tmp/labguest.state", "holds VM"},
	{"wrong-vcpus", "/lab/wrong-vcpus.toml --incoming /tmp/labguest.state", "vcpus: saved machine has 2, config has 1"},
	{"missing-backing", "/lab/missing-dax.toml --incoming /tmp/labguest.state", "/dev/dax9.0"},
}

// RebootScenario (scripts/reboot-scenario.sh, with the cycles and
// RebootFaults as its parameters) drives save and resume: pmvm runs the guest on
// /dev/dax0.0; each cycle n saves it (pmvm save: suspend through the agent,
// state file, exit), then a new pmvm process resumes it (pmvm run
// --incoming) and the guest reports resume n and checks its pattern. After
// the first save, each RebootFaults case must be refused and the device's
// SHA-256 must be the same before and after them. Lines, in order:
//
//	PMVM-LAB dax-ready size=<bytes> align=<bytes>
//	PMVM-LAB got: PMVM-GUEST ready ...; PMVM-LAB ready-seen l1-date=<s>
//	PMVM-LAB got: PMVM-GUEST boot_id=<uuid>
//	per cycle n:
//	PMVM-LAB save-<n>: <pmvm save output: the save timeline> ... PMVM-LAB save-<n>-exit=0 secs=<s>
//	PMVM-LAB pmvm-exit=0
//	(n = 1) PMVM-LAB inspect: <pmvm state inspect> ... PMVM-LAB inspect-exit=0
//	(n = 1) PMVM-LAB daxsum ... sha256=<before>; per fault: PMVM-LAB fault-<tag>: <refusal> ... PMVM-LAB fault-<tag>-exit=<code>; PMVM-LAB daxsum ... sha256=<after>
//	PMVM-LAB pmvm-started pid=<pid> args=/lab/guest.toml --incoming /tmp/labguest.state
//	PMVM-LAB got: PMVM-GUEST resumed n=<n> ...; PMVM-LAB resumed-seen n=<n> l1-date=<s>
//	PMVM-LAB got: PMVM-GUEST pattern-verify ok ... round=<n> ...
func RebootScenario(cycles int) string {
	var faults strings.Builder
	for _, f := range RebootFaults {
		faults.WriteString(f.Tag + " " + f.Args + "\n")
	}
	return ShellVars(map[string]string{"CYCLES": strconv.Itoa(cycles), "FAULTS": faults.String()}) +
		script("reboot-scenario.sh")
}
