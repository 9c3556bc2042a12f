package qa

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmvm/pmvm/qa/lab"
)

// TestLabRebootResume: the guest's RAM is /dev/dax0.0 in the lab host and
// its mode is "reboot". Twice: pmvm save (suspend through qemu-ga, state
// file, the pmvm process exits 0), then a new pmvm process resumes it with
// pmvm run --incoming; the guest reports the resume with both CPUs, the
// same boot_id, a wall clock within 2 s of the lab host's and its memory
// pattern intact. It is also the fault matrix (lab.MatrixCases, injected at
// their steps by lab.RebootScenario, one lab host for all): each case must
// end resumed intact, or refused with a message naming the problem and
// the device's SHA-256 unchanged; the test prints the table
// (lab.FormatMatrix) and fails on every case that ended otherwise.
func TestLabRebootResume(t *testing.T) { inLabAttempts(t, testLabRebootResume) }

func testLabRebootResume(t testing.TB) {
	const cycles = 2
	seed := rand.Uint64() >> 1
	t.Logf("seed %#x", seed)
	vm, t1 := bootStandard(t, lab.RebootStandard(seed, cycles), "l1-reboot", 8*time.Minute)
	waitFor(t, vm, `PMVM-LAB dax-ready size=(\d+)`, time.Minute)
	ready := waitFor(t, vm, `PMVM-LAB got: PMVM-GUEST ready date=\d+ uptime=([\d.]+)`, 5*time.Minute)
	bootID := waitFor(t, vm, `PMVM-LAB got: PMVM-GUEST boot_id=(\S+)`, time.Minute)[1]
	uptime, _ := strconv.ParseFloat(ready[1], 64) // each resume's uptime must go on from here
	for n := 1; n <= cycles; n++ {
		waitFor(t, vm, `PMVM-LAB save-`+itoa(n)+`: .*state durable`, 3*time.Minute)
		waitFor(t, vm, `PMVM-LAB save-`+itoa(n)+`-exit=0 `, time.Minute)
		waitFor(t, vm, `PMVM-LAB pmvm-exit=0`, time.Minute)
		if n == 1 {
			checkInspect(t, vm)
			waitFor(t, vm, `PMVM-LAB mx-sum case=`+lastBatchCase()+` `, 5*time.Minute)
		}
		if n == cycles {
			// killed-resume: the first pmvm --incoming is killed once it
			// has mapped the memory; the one after it must resume.
			waitFor(t, vm, `PMVM-LAB killon pid=\d+ .*killed=yes`, 2*time.Minute)
			waitFor(t, vm, `PMVM-LAB pmvm-exit=`, time.Minute)
		}
		waitFor(t, vm, `PMVM-LAB pmvm-started pid=\d+ args=/lab/guest.toml --incoming /tmp/labguest.state`, time.Minute)
		m := waitFor(t, vm, `PMVM-GUEST resumed n=`+itoa(n)+` (.*)|PMVM-LAB (mx-killed-resume-end=refused)`, 2*time.Minute)
		if m[2] != "" {
			t.Errorf("resume %d: the guest could not be resumed after its first resume was killed (see the fault matrix)", n)
			break
		}
		r := fields(m[1])
		seen := fields(waitFor(t, vm, `PMVM-LAB resumed-seen n=`+itoa(n)+` (.*)`, time.Minute)[1])
		checkResume(t, n, r, bootID, time.Unix(atoi(seen["l1-date"]), 0))
		up, err := strconv.ParseFloat(r["uptime"], 64)
		if err != nil || up <= uptime {
			t.Errorf("resume %d: guest uptime %q does not continue past %.2f s", n, r["uptime"], uptime)
		}
		uptime = up
		v := waitFor(t, vm, `PMVM-GUEST pattern-verify (\S+) .*round=`+itoa(n)+` `, 5*time.Minute)
		if v[1] != "ok" {
			t.Errorf("resume %d: pattern-verify %s: guest memory changed across save and resume", n, v[1])
		}
		t.Logf("cycle %d: saved, new process resumed, pattern %s, after %v", n, v[1], time.Since(t1))
	}
	waitFor(t, vm, `PMVM-LAB scenario-exit=0`, 10*time.Minute) // killed-save, a cold boot, killed-late-resume
	if err := vm.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	rows := lab.JudgeMatrix(vm.PrefixedLines("PMVM-LAB "))
	t.Logf("fault matrix (%v in all):\n%s", time.Since(t1), lab.FormatMatrix(rows))
	for _, r := range rows {
		if !r.OK() {
			t.Errorf("fault matrix: %s (%s at %q): expected %q, observed %q: %s", r.Tag, r.Fault, r.Step, r.Expect, r.Observed, r.Detail)
		}
	}
}

// lastBatchCase is the tag of the last refused resume the scenario runs
// after the first save.
func lastBatchCase() string {
	last := ""
	for _, c := range lab.MatrixCases {
		if c.Args != "" {
			last = c.Tag
		}
	}
	return last
}

// checkInspect checks pmvm state inspect of the first save.
func checkInspect(t testing.TB, vm *lab.VM) {
	t.Helper()
	inspect := waitFor(t, vm, `PMVM-LAB inspect-exit=(\d+)`, time.Minute)
	if inspect[1] != "0" {
		t.Errorf("pmvm state inspect exited %s", inspect[1])
	}
	shown := strings.Join(vm.PrefixedLines("PMVM-LAB inspect: "), "\n")
	for _, sec := range []string{"machine", "clock", "memory/ram0", "vcpu/0", "vcpu/1", "uart@0x3f8", "uart@0x2f8", "cmos@0x70", "i8042@0x60", "acpi-pm@0x600"} {
		if !strings.Contains(shown, sec) {
			t.Errorf("pmvm state inspect does not show section %s:\n%s", sec, shown)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
