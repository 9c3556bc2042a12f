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

// TestTroubleInsideKVM proves that the lab host dying with KVM on its
// trace is not the lab's trouble (pmvm drives kvm-amd) unless the trace
// shows the kernel patching its own text, which the TCG lab does badly.
func TestTroubleInsideKVM(t *testing.T) {
	inKVM := []string{
		"[  301.1] BUG: kernel NULL pointer dereference, address: 0000000000000008",
		"[  301.1] Oops: 0000 [#1] PREEMPT SMP NOPTI",
		"[  301.1] RIP: 0010:svm_vcpu_run+0x1c5/0x800 [kvm_amd]",
		"[  301.1] Call Trace:",
		"[  301.1]  kvm_arch_vcpu_ioctl_run+0x9c2/0x1830 [kvm]",
		"[  301.1]  kvm_vcpu_ioctl+0x27f/0x6b0 [kvm]",
		"[  301.1] Kernel panic - not syncing: Fatal exception",
	}
	assert.Empty(t, HostTrouble(inKVM), "a death inside kvm-amd may be pmvm's doing")
	assert.Equal(t, []string{inKVM[1], inKVM[6]}, KVMTrouble(inKVM))

	patching := []string{
		"[  101.2] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [pmvm:311]",
		"[  101.2] RIP: 0010:smp_text_poke_int3_handler+0x20/0x80",
		"[  101.2]  exc_int3+0x40/0x70",
		"[  101.2]  __schedule+0x3f0/0xa20",
		"[  101.2]  kvm_vcpu_ioctl+0x27f/0x6b0 [kvm]",
	}
	assert.Equal(t, []string{patching[0]}, HostTrouble(patching), "text patching under TCG is the lab's own trouble")
	assert.Empty(t, KVMTrouble(patching))

	// Seen in the lab: the emulated VMRUN returns with the host's stack or
	// GS base not restored; the overflow's trace repeats error_entry for
	// hundreds of lines before the KVM frames.
	guard := []string{"[ 17.14] BUG: TASK stack guard page was hit at 0000000058e51cdd (stack is ...)"}
	for i := 0; i < 300; i++ {
		guard = append(guard, "[ 17.15]  ? error_entry+0xd/0x130")
	}
	guard = append(guard,
		"[ 17.15] RIP: 0010:__svm_vcpu_run+0x9c/0x210 [kvm_amd]",
		"[ 17.15]  svm_vcpu_run+0x1cf/0x720 [kvm_amd]",
		"[ 17.15]  kvm_arch_vcpu_ioctl_run+0x8be/0x1750 [kvm]",
		"[ 17.38] Kernel panic - not syncing: Fatal exception in interrupt")
	assert.Equal(t, []string{guard[0], guard[len(guard)-1]}, HostTrouble(guard), "the emulated CPU's fault, not a VMM's")
	assert.Empty(t, KVMTrouble(guard))
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
