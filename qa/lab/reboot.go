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
	// changed, another VM's name (also the second pmvm on the same
	// backing), and a backing that does not exist.
	vcpus := DaxGuestConfig()
	vcpus.VCPUs = 1
	memory := DaxGuestConfig()
	memory.Memory[0].Size = "128MiB"
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
		Configs: map[string]*VMConfig{"wrong-vcpus": &vcpus, "wrong-memory": &memory,
			"other-vm": &other, "missing-dax": &missing},
		Dax: true,
	}
}

// RebootScenario (scripts/reboot-scenario.sh; its parameters are the
// cycles and the MatrixCases with Args) drives save and resume and
// injects the fault matrix: pmvm runs the guest on /dev/dax0.0; each cycle
// n saves it (pmvm save: suspend through the agent, state file, exit),
// then a new pmvm process resumes it (pmvm run --incoming) and the guest
// reports resume n and checks its pattern. The faults, at their steps:
//
//   - after the first save, the batch (MatrixCases with Args): each pmvm
//     run must be refused; the device is hashed before the batch and after
//     each case ("scrubbed" zeroes the namespace's first 32 MiB first and
//     puts them back before its hash);
//   - after resume 1, "second-pmvm": another VM on the same backing while
//     the guest runs;
//   - the last cycle's resume, "killed-resume": the resuming pmvm is killed
//     (kill -9, by killon) the moment it has mapped /dev/dax0.0, then the
//     resume is run again and must wake the guest with its pattern intact;
//   - then "disk-full": pmvm save to a full file system must be refused and
//     the guest woken again, reporting its next resume with its pattern
//     intact;
//   - then "killed-save-*": pmvm suspend, kill -9 of pmvm before any state
//     is written, then the state path and the last spent state file must
//     both be refused with the device's hash unchanged;
//   - last, "killed-late-resume": the guest cold-booted again and saved,
//     the resuming pmvm is killed once it has logged "state restored"
//     (memory loaded, its generation advanced, the vCPUs not yet run),
//     and the resume run again must wake the guest.
//
// Lines, in order (JudgeMatrix reads the mx- ones):
//
//	PMVM-LAB dax-ready size=<bytes> align=<bytes>
//	PMVM-LAB got: PMVM-GUEST ready ...; PMVM-LAB ready-seen l1-date=<s>
//	PMVM-LAB got: PMVM-GUEST boot_id=<uuid>
//	per cycle n:
//	PMVM-LAB save-<n>: <pmvm save output: the save timeline> ... PMVM-LAB save-<n>-exit=0 secs=<s>
//	PMVM-LAB pmvm-exit=0
//	(n = 1) PMVM-LAB inspect: <pmvm state inspect> ... PMVM-LAB inspect-exit=0
//	(n = 1) PMVM-LAB mx-sum case=start sha256=<hex>; per case: PMVM-LAB mx-<tag>: <refusal> ...
//	        PMVM-LAB mx-<tag>-exit=<code> secs=<s>; PMVM-LAB mx-sum case=<tag> sha256=<hex>
//	(n = last) PMVM-LAB killon pid=<pid> ... killed=yes; PMVM-LAB mx-killed-resume: <state files> ...
//	PMVM-LAB pmvm-started pid=<pid> args=/lab/guest.toml --incoming /tmp/labguest.state
//	PMVM-LAB got: PMVM-GUEST resumed n=<n> ...; PMVM-LAB resumed-seen n=<n> l1-date=<s>
//	PMVM-LAB got: PMVM-GUEST pattern-verify ok ... round=<n> ...
//	(n = last) PMVM-LAB mx-killed-resume-end=resumed|refused; PMVM-LAB mx-killed-resume-pattern=ok|BAD
//	(n = 1) PMVM-LAB mx-second-pmvm: <refusal> ... PMVM-LAB mx-second-pmvm-exit=<code> secs=<s>
//	        PMVM-LAB mx-second-pmvm-alive=yes|no
//	PMVM-LAB mx-disk-full: <refusal> ...; PMVM-LAB mx-disk-full-alive=yes|no; PMVM-LAB mx-disk-full-pattern=ok|BAD|none
//	PMVM-LAB mx-sum case=after-kill sha256=<hex>; PMVM-LAB mx-killed-save-new: ... -exit=<code>;
//	PMVM-LAB mx-sum case=killed-save-new ...; the same for killed-save-old
//	PMVM-LAB pmvm-started ... args=/lab/guest.toml; PMVM-LAB got: PMVM-GUEST ready ...; PMVM-LAB save-late...
//	PMVM-LAB killon ...; PMVM-LAB mx-killed-late-resume: ...; PMVM-LAB mx-killed-late-resume-end=resumed|refused ...
//	PMVM-LAB scenario-exit=0
func RebootScenario(cycles int) string {
	var faults strings.Builder
	for _, c := range MatrixCases {
		if c.Args != "" {
			faults.WriteString(c.Tag + " " + c.Args + "\n")
		}
	}
	return ShellVars(map[string]string{"CYCLES": strconv.Itoa(cycles), "FAULTS": faults.String()}) +
		script("reboot-scenario.sh")
}
