package lab

import (
	"regexp"
	"strings"
)

// The lab host is Debian's kernel under QEMU TCG with nested SVM on a
// 2-core machine. Now and then its own kernel panics, oopses or freezes
// for tens of seconds (RCU stalls, soft lockups on every CPU at once)
// with no guest involved; pmvm is a user process in it and cannot do
// that, so such lines tell a lab failure from a pmvm failure. With two L2
// guests at once it has also died inside kvm-amd (UpdateScenario): that
// is not counted as the lab's trouble, since a VMM drives kvm-amd.

// hostTroubleRE matches the lab host kernel's own distress lines.
var hostTroubleRE = regexp.MustCompile(`Kernel panic|Oops:|BUG: soft lockup|rcu: INFO: rcu_\w+ detected stalls|rcu_\w+ kthread starved|stack guard page was hit|corrupted stack end`)

// HostTrouble returns those lines from a lab host's console. Guest lines,
// which the lab prefixes with "[l2] " or "[vmN] ", do not count: a guest
// in trouble may be pmvm's fault. Nor does distress whose trace runs
// through KVM (KVMTrouble): the lab host died while a VMM drove kvm-amd,
// which may be that VMM's doing, unless the trace shows what no VMM can
// cause: the kernel patching its own text (int3, text_poke; the TCG lab
// does that badly, see qa/guestbin/kvmhold), or the host's stack guard
// page hit right on the way out of __svm_vcpu_run (the emulated VMRUN
// came back with the host's GS base or stack not restored, which is the
// emulated CPU's job, not anything an ioctl can reach).
func HostTrouble(console []string) []string {
	lab, _ := classifyTrouble(console)
	return lab
}

// KVMTrouble returns the lab host's distress lines whose trace runs
// through KVM without the signs above: not counted as the lab's trouble.
func KVMTrouble(console []string) []string {
	_, kvm := classifyTrouble(console)
	return kvm
}

var (
	// kvmFrameRE matches trace frames inside KVM.
	kvmFrameRE = regexp.MustCompile(`\[kvm(_amd)?\]|\bsvm_vcpu_run|\bkvm_arch_vcpu_ioctl_run|\bvcpu_enter_guest`)
	// labFaultRE matches what only the lab itself causes: text patching,
	// and the stack guard page hit (the message) at __svm_vcpu_run's exit.
	patchFrameRE = regexp.MustCompile(`\btext_poke|\bexc_int3|\bpoke_int3|\bint3:`)
	guardHitRE   = regexp.MustCompile(`stack guard page was hit`)
	svmRunRIPRE  = regexp.MustCompile(`RIP: 0010:__svm_vcpu_run\b`)
)

// classifyTrouble splits the host's distress lines. A lab host rarely
// survives its first episode, and a trace can run to hundreds of lines (a
// stack overflow repeats its frames), so everything from the first
// distress line on is read as its trace.
func classifyTrouble(console []string) (lab, kvm []string) {
	var host []string
	for _, line := range console {
		if strings.HasPrefix(line, "[l2]") || strings.HasPrefix(line, "[vm") {
			continue
		}
		host = append(host, line)
	}
	first := -1
	var trouble []string
	for i, line := range host {
		if hostTroubleRE.MatchString(line) {
			if first < 0 {
				first = i
			}
			trouble = append(trouble, line)
		}
	}
	if first < 0 {
		return nil, nil
	}
	inKVM, patching, guardHit, svmRIP := false, false, false, false
	for _, l := range host[first:] {
		inKVM = inKVM || kvmFrameRE.MatchString(l)
		patching = patching || patchFrameRE.MatchString(l)
		guardHit = guardHit || guardHitRE.MatchString(l)
		svmRIP = svmRIP || svmRunRIPRE.MatchString(l)
	}
	if inKVM && !patching && !(guardHit && svmRIP) {
		return nil, trouble
	}
	return trouble, nil
}

// powerOffRE matches the lab host kernel's last words on a clean poweroff
// or an announced reboot.
var powerOffRE = regexp.MustCompile(`reboot: (Power down|Restarting system)`)

// VanishedLine is what HostTroubleOf reports for a lab host that reset
// without a word.
const VanishedLine = "(the lab host's QEMU exited by itself with no poweroff and no panic on its console: under -no-reboot that is a reset, a triple fault of the lab host's own kernel)"

// HostTroubleOf is HostTrouble over vm's console, plus VanishedLine when
// the lab host reset silently: QEMU exited by itself (status 0, neither
// killed nor timed out) and its kernel never said it powered off. pmvm, a
// process in the lab host, cannot reset the lab host's kernel.
func HostTroubleOf(vm *VM) []string {
	lines := vm.Lines()
	out := HostTrouble(lines)
	vm.mu.Lock()
	selfExit := vm.exited && vm.exitErr == nil && !vm.timedOut
	vm.mu.Unlock()
	if !selfExit {
		return out
	}
	for _, l := range lines {
		if powerOffRE.MatchString(l) || strings.Contains(l, "Kernel panic") {
			return out
		}
	}
	return append(out, VanishedLine)
}
