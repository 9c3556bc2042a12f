package lab

import (
	"fmt"
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

// RebootScenario drives save and resume: pmvm runs the guest on
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
	var b strings.Builder
	b.WriteString(`. /lab/lib.sh
VM=labguest
dax_setup
for c in /lab/guest.toml /lab/wrong-vcpus.toml /lab/other-vm.toml /lab/missing-dax.toml; do dax_config $c; done
pmvm_start /lab/guest.toml
wait_for 'PMVM-GUEST ready' 600 || fail "the guest never got ready (qemu-ga + pattern fill)"
lab "ready-seen l1-date=$(now)"
wait_for 'PMVM-GUEST boot_id=' 5 || fail "the guest printed no boot_id"
save() {
	run_cmd save-$1 pmvm save $VM --state /tmp/labguest.state --timeout 60s
	[ $RC = 0 ] || fail "pmvm save (cycle $1) exited $RC: $OUT"
	pmvm_wait 60 || fail "pmvm did not exit after pmvm save (cycle $1)"
	[ "$PMVM_RC" = 0 ] || fail "pmvm exited $PMVM_RC after pmvm save (cycle $1)"
}
resume() {
	pmvm_start /lab/guest.toml --incoming /tmp/labguest.state
	wait_for "PMVM-GUEST resumed n=$1 " 120 || fail "the guest did not report resume $1 after pmvm run --incoming"
	lab "resumed-seen n=$1 l1-date=$(now)"
	wait_for "PMVM-GUEST pattern-verify [A-Za-z]+ .*round=$1 " 600 || fail "the pattern check after resume $1 did not finish"
}
faults() {
	run_cmd inspect pmvm state inspect /tmp/labguest.state
	[ $RC = 0 ] || fail "pmvm state inspect exited $RC"
	size=$(stat -c %s /tmp/labguest.state)
	head -c $((size / 2)) /tmp/labguest.state > /tmp/truncated.state
	cp /tmp/labguest.state /tmp/corrupted.state
	printf '\377' | dd of=/tmp/corrupted.state bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
	cp /tmp/labguest.state /tmp/newer.state
	printf '\011' | dd of=/tmp/newer.state bs=1 seek=8 conv=notrunc 2>/dev/null
	daxpeek --sum /dev/dax0.0 || fail "daxpeek --sum failed"
`)
	for _, f := range RebootFaults {
		fmt.Fprintf(&b, "\trun_cmd fault-%s pmvm run %s --log-level error\n", f.Tag, f.Args)
		fmt.Fprintf(&b, "\t[ $RC != 0 ] || fail \"pmvm run %s was not refused\"\n", f.Args)
	}
	b.WriteString(`	daxpeek --sum /dev/dax0.0 || fail "daxpeek --sum failed"
}
`)
	for n := 1; n <= cycles; n++ {
		fmt.Fprintf(&b, "save %d\n", n)
		if n == 1 {
			b.WriteString("faults\n")
		}
		fmt.Fprintf(&b, "resume %d\n", n)
	}
	b.WriteString("pmvm_stop\n")
	return b.String()
}
