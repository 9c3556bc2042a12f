package lab

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func consoleLines(t *testing.T, path string) []string {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// TestGuestHealthFailsTheXSaveWarning: the console of a lab boot without
// the boot XCR0 (testdata/guest-xsave-warning.log: TestLabBoot's lab host
// on 2026-12-08 with x86.SetBootXCR0 not called, as before issue 12) fails
// the judge, naming the taint and the warning.
func TestGuestHealthFailsTheXSaveWarning(t *testing.T) {
	p := GuestHealthProblems(consoleLines(t, "testdata/guest-xsave-warning.log"))
	require.Len(t, p, 2, "%q", p)
	assert.Contains(t, p[0], "tainted = 512 (flags W)")
	assert.Contains(t, p[1], "XSAVE consistency problem: size 832 != kernel_size 576")
	assert.Contains(t, p[1], "WARNING: CPU: 0 PID: 0 at arch/x86/kernel/fpu/xstate.c")
}

// TestGuestHealthPassesAHealthyGuest: the same boot with the fix passes;
// the relayed copies of a line ("[l2] ", "PMVM-LAB got: ") count once.
func TestGuestHealthPassesAHealthyGuest(t *testing.T) {
	lines := []string{
		"[l2] PMVM-GUEST uname=6.1.0-57-amd64",
		"[l2] PMVM-GUEST health when=boot tainted=0 problems=0",
		"PMVM-LAB got: PMVM-GUEST health when=boot tainted=0 problems=0",
		"[l2] PMVM-GUEST resumed n=1 cpus-online=0-1",
		"[l2] PMVM-GUEST health when=resume-1 tainted=0 problems=0",
	}
	assert.Empty(t, GuestHealthProblems(lines))
	assert.Empty(t, GuestHealthProblems([]string{"PMVM-LAB kvm-ready"}), "no guest, nothing to judge")
}

// TestGuestHealthWantsAReportAfterBootAndEachResume: a guest that booted
// or resumed without a report fails: a judge that sees nothing must not
// pass.
func TestGuestHealthWantsAReportAfterBootAndEachResume(t *testing.T) {
	p := GuestHealthProblems([]string{"[l2] PMVM-GUEST uname=6.1.0-57-amd64"})
	require.Len(t, p, 1)
	assert.Contains(t, p[0], "no health report after boot")

	p = GuestHealthProblems([]string{
		"[l2] PMVM-GUEST uname=6.1.0-57-amd64",
		"[l2] PMVM-GUEST health when=boot tainted=0 problems=0",
		"[l2] PMVM-GUEST resumed n=1 cpus-online=0-1",
		"[l2] PMVM-GUEST health when=resume-1 tainted=0 problems=0",
		"[l2] PMVM-GUEST resumed n=2 cpus-online=0-1",
	})
	require.Len(t, p, 1)
	assert.Contains(t, p[0], "resumed (n=2) but printed no health report")
}

// TestGuestHealthFailsAStallAfterResume: an RCU stall reported after a
// resume fails, named by its report.
func TestGuestHealthFailsAStallAfterResume(t *testing.T) {
	p := GuestHealthProblems([]string{
		"[l2] PMVM-GUEST uname=6.1.0-57-amd64",
		"[l2] PMVM-GUEST health when=boot tainted=0 problems=0",
		"[l2] PMVM-GUEST resumed n=1 cpus-online=0-1",
		"[l2] PMVM-GUEST health when=resume-1 tainted=0 problems=1",
		"[l2] PMVM-GUEST health-problem when=resume-1: [   52.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
	})
	require.Len(t, p, 1)
	assert.Contains(t, p[0], "guest (resume-1)")
	assert.Contains(t, p[0], "rcu_preempt detected stalls")
}
