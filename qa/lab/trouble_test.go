package lab

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestHostTroubleIgnoresGuests proves that only the lab host's own
// kernel lines can earn a lab test its second attempt: the same distress
// from a guest (prefixed [l2] or [vmN]) might be pmvm's doing.
func TestHostTroubleIgnoresGuests(t *testing.T) {
	console := []string{
		"PMVM-LAB daxsum dev=/dev/dax0.0 size=262144000 sha256=c4b2",
		"[   75.847003] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
		"[   75.847003] rcu: rcu_preempt kthread starved for 5252 jiffies! g4401 f0x2",
		"[  100.977427] watchdog: BUG: soft lockup - CPU#0 stuck for 45s! [kworker/0:1:17]",
		"[l2] [    3.1] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [swapper/1:0]",
		"[vm1] [    9.0] Kernel panic - not syncing: Attempted to kill init!",
		"[   12.000000] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI",
		"[   13.000000] PMVM-GUEST pattern-verify BAD round=1",
	}
	got := HostTrouble(console)
	assert.Equal(t, []string{console[1], console[2], console[3], console[6]}, got)
	assert.Empty(t, HostTrouble([]string{"[l2] Kernel panic - not syncing", "PMVM-LAB scenario-exit=1"}))
}

// TestHostTroubleOfASilentReset proves a lab host that vanished (QEMU
// exited by itself, -no-reboot, with no poweroff or panic on its console:
// a triple fault) counts as lab trouble, and that a clean poweroff, a
// QEMU killed by the test or by its deadline, or a lab host still running
// do not.
func TestHostTroubleOfASilentReset(t *testing.T) {
	vmWith := func(exited bool, exitErr error, timedOut bool, lines ...string) *VM {
		return &VM{lines: lines, exited: exited, exitErr: exitErr, timedOut: timedOut}
	}
	running := []string{"PMVM-LAB got: PMVM-GUEST pattern-verify ok", "PMVM-LAB verified vm=vm2"}
	assert.Equal(t, []string{VanishedLine}, HostTroubleOf(vmWith(true, nil, false, running...)))
	assert.Empty(t, HostTroubleOf(vmWith(true, nil, false, append(running, "PMVM-LAB scenario-exit=0", "[   11.72] reboot: Power down")...)))
	assert.Empty(t, HostTroubleOf(vmWith(true, errors.New("signal: killed"), false, running...)))
	assert.Empty(t, HostTroubleOf(vmWith(true, nil, true, running...)))
	assert.Empty(t, HostTroubleOf(vmWith(false, nil, false, running...)))
	panicked := HostTroubleOf(vmWith(true, nil, false, "[ 9.1] Kernel panic - not syncing: Fatal exception"))
	assert.Equal(t, []string{"[ 9.1] Kernel panic - not syncing: Fatal exception"}, panicked, "a panic is reported as itself")
}
