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
// through KVM (KVMTrouble): the lab host died while pmvm drove kvm-amd,
// which may be pmvm's doing, unless the trace shows the kernel patching
// its own text (int3, text_poke), which the nested TCG lab does badly by
// itself (see qa/guestbin/kvmhold).
func HostTrouble(console []string) []string {
	lab, _ := classifyTrouble(console)
	return lab
}

// KVMTrouble returns the lab host's distress lines whose trace runs
// through KVM without text patching: not counted as the lab's trouble.
func KVMTrouble(console []string) []string {
	_, kvm := classifyTrouble(console)
	return kvm
}

// kvmFrameRE matches trace frames inside KVM; patchFrameRE the kernel's
// text patching.
var (
	kvmFrameRE   = regexp.MustCompile(`\[kvm(_amd)?\]|\bsvm_vcpu_run|\bkvm_arch_vcpu_ioctl_run|\bvcpu_enter_guest`)
	patchFrameRE = regexp.MustCompile(`\btext_poke|\bexc_int3|\bpoke_int3|\bint3:`)
)

// traceWindow is how many host lines before and after a distress line
// belong to its episode (an oops, its trace, the panic that follows).
const traceWindow = 60

func classifyTrouble(console []string) (lab, kvm []string) {
	var host []string
	for _, line := range console {
		if strings.HasPrefix(line, "[l2]") || strings.HasPrefix(line, "[vm") {
			continue
		}
		host = append(host, line)
	}
	for i, line := range host {
		if !hostTroubleRE.MatchString(line) {
			continue
		}
		start, end := max(0, i-traceWindow), min(len(host), i+traceWindow)
		inKVM, patching := false, false
		for _, l := range host[start:end] {
			inKVM = inKVM || kvmFrameRE.MatchString(l)
			patching = patching || patchFrameRE.MatchString(l)
		}
		if inKVM && !patching {
			kvm = append(kvm, line)
		} else {
			lab = append(lab, line)
		}
	}
	return lab, kvm
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
