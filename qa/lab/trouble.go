package lab

import (
	"regexp"
	"strings"
)

// The lab host is Debian's kernel under QEMU TCG with nested SVM on a
// 2-core machine. Now and then its own kernel panics, oopses or freezes
// for tens of seconds (RCU stalls, soft lockups on every CPU at once)
// with no guest involved; with two L2 guests at once it has also died
// inside kvm-amd (UpdateScenario). pmvm is a user process in it and cannot
// do that, so such lines tell a lab failure from a pmvm failure.

// hostTroubleRE matches the lab host kernel's own distress lines.
var hostTroubleRE = regexp.MustCompile(`Kernel panic|Oops:|BUG: soft lockup|rcu: INFO: rcu_\w+ detected stalls|rcu_\w+ kthread starved|stack guard page was hit|corrupted stack end`)

// HostTrouble returns those lines from a lab host's console. Guest lines,
// which the lab prefixes with "[l2] " or "[vmN] ", do not count: a guest
// in trouble may be pmvm's fault.
func HostTrouble(console []string) []string {
	var out []string
	for _, line := range console {
		if strings.HasPrefix(line, "[l2]") || strings.HasPrefix(line, "[vm") {
			continue
		}
		if hostTroubleRE.MatchString(line) {
			out = append(out, line)
		}
	}
	return out
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
