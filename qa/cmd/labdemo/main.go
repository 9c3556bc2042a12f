// Command labdemo builds the lab images and boots the lab host (QEMU TCG with
// nested KVM) with its console on stdout; pmvm runs guests inside it.
// It exits non-zero if any step fails. `make demo` runs it.
//
//	go run ./qa/cmd/labdemo [-scenario update|pmvm|kvm|guest|dax|suspend] [-timeout 8m] [-pmvm path]
//
// update (the default) is the product's story: two VMs on device-dax
// survive a real kexec of the lab host from Debian's 6.1 kernel into 6.12;
// it ends with the timeline and each VM's blackout.
//
// dax and suspend run TestLabDax's and TestLabSuspendWake's labs and print
// what their checkers found.
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/pmvm/pmvm/qa/lab"
)

func main() {
	scenario := flag.String("scenario", "update", "update: two VMs survive a 6.1 -> 6.12 kexec of the lab host; pmvm: run the guest under pmvm in L1; kvm: only check nested KVM in L1; guest: boot the guest image directly under TCG QEMU; dax: guest RAM on /dev/dax0.0 in L1; suspend: S3 cycles through the guest agent in L1")
	timeout := flag.Duration("timeout", 8*time.Minute, "overall boot timeout")
	pmvm := flag.String("pmvm", "", "use this static pmvm binary instead of building ./cmd/pmvm")
	flag.Parse()
	run := run
	if *scenario == "update" {
		run = func(_ string, timeout time.Duration, pmvm string) error { return runUpdate(timeout, pmvm) }
	}
	if err := run(*scenario, *timeout, *pmvm); err != nil {
		fmt.Fprintln(os.Stderr, "labdemo: FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("labdemo: OK")
}

func run(scenario string, timeout time.Duration, pmvm string) error {
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	l, err := lab.New(logf)
	if err != nil {
		return err
	}
	std := lab.Standard{Pmvm: pmvm}
	var want *regexp.Regexp
	var check func(vm *lab.VM) ([]string, error)
	seed := uint64(time.Now().UnixNano()) >> 1
	switch scenario {
	case "dax":
		std = lab.DaxStandard(seed)
		std.Pmvm = pmvm
		check = func(vm *lab.VM) ([]string, error) {
			r, err := lab.CheckDaxRun(vm, seed, timeout)
			return r.Problems, err
		}
	case "suspend":
		plan := lab.SuspendPlan{Cycles: 3, RTC: true, NoAgent: true, NoAgentTimeout: "10s"}
		std = lab.SuspendStandard(seed, plan)
		std.Pmvm = pmvm
		check = func(vm *lab.VM) ([]string, error) {
			r, err := lab.CheckSuspendRun(vm, plan, lab.SuspendExpect{CPUsOnline: "0-1", NoAgentTimeout: 10}, timeout)
			return r.Problems, err
		}
	case "pmvm":
		want = regexp.MustCompile(`PMVM-LAB pmvm-exit=(\d+)`)
	case "kvm":
		std.NoPmvm, std.Scenario = true, lab.KVMCheckScenario
		want = regexp.MustCompile(`PMVM-LAB scenario-exit=(\d+)`)
	case "guest":
		std.NoPmvm, std.Scenario = true, lab.KVMCheckScenario
	default:
		return fmt.Errorf("unknown -scenario %q", scenario)
	}
	t0 := time.Now()
	b, err := l.BuildStandard(std)
	if err != nil {
		return err
	}
	logf("labdemo: images built in %v (kernel %s)", time.Since(t0).Round(time.Millisecond), b.Kernel.Version)
	q := lab.LabHost(b.Host)
	if scenario == "guest" {
		q = lab.DirectGuest(b.Guest)
		want = regexp.MustCompile(`PMVM-GUEST done`)
	}
	q.Timeout = timeout
	q.Echo = func(s string) { fmt.Println(s) }
	t1 := time.Now()
	vm, err := l.Start(q)
	if err != nil {
		return err
	}
	defer vm.Kill()
	if scenario != "guest" {
		if _, err := vm.WaitFor(regexp.MustCompile(`PMVM-LAB kvm-ready`), timeout); err != nil {
			return err
		}
		logf("labdemo: L1 kvm-ready after %v", time.Since(t1).Round(time.Millisecond))
	}
	if check != nil {
		problems, err := check(vm)
		for _, p := range problems {
			logf("labdemo: PROBLEM: %s", p)
		}
		if err != nil {
			return err
		}
		if len(problems) > 0 {
			return fmt.Errorf("%d problems (above)", len(problems))
		}
		logf("labdemo: %s lab checked after %v", scenario, time.Since(t1).Round(time.Millisecond))
		want = regexp.MustCompile(`PMVM-LAB scenario-exit=(\d+)`)
	}
	if scenario == "pmvm" {
		if _, err := vm.WaitFor(regexp.MustCompile(`PMVM-GUEST done`), timeout); err != nil {
			return err
		}
		logf("labdemo: guest done after %v", time.Since(t1).Round(time.Millisecond))
	}
	m, err := vm.WaitFor(want, timeout)
	if err != nil {
		return err
	}
	logf("labdemo: %q after %v", m[0], time.Since(t1).Round(time.Millisecond))
	if err := vm.Wait(time.Minute); err != nil {
		return err
	}
	if len(m) > 1 && m[1] != "0" {
		return fmt.Errorf("%s", m[0])
	}
	return nil
}

// runUpdate boots the kernel-update lab, follows it with the same checker
// as TestLabKernelUpdate and ends with what a newcomer wants to see: the
// update's timeline across the kexec with each VM's blackout, as pmvm host
// restore printed it on the new kernel, and a summary of what was checked.
func runUpdate(timeout time.Duration, pmvm string) error {
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	l, err := lab.New(logf)
	if err != nil {
		return err
	}
	seed := uint64(time.Now().UnixNano()) >> 1
	t0 := time.Now()
	b, err := l.BuildUpdate(lab.UpdateSpec{Seed: seed, Pmvm: pmvm})
	if err != nil {
		return err
	}
	logf("labdemo: images built in %v: the lab host boots %s; pmvm host update will kexec it into %s",
		time.Since(t0).Round(time.Millisecond), b.From.Version, b.To.Version)
	q := lab.UpdateHost(b)
	q.Timeout = timeout
	q.Echo = func(s string) { fmt.Println(s) }
	var vm *lab.VM
	var r *lab.UpdateRun
	for attempt := 1; ; attempt++ {
		if vm, err = l.Start(q); err != nil {
			return err
		}
		defer vm.Kill()
		r, err = lab.CheckUpdateRun(vm, lab.UpdateExpect{From: b.From.Version, To: b.To.Version, VCPUs: b.Spec.VCPUs}, timeout)
		if err == nil {
			err = vm.Wait(time.Minute)
		}
		fault := nestedLabFault(vm)
		if err == nil || attempt == 2 || len(fault) == 0 {
			break
		}
		// The demo is a showcase: a fault of the nested lab itself gets one
		// more run (TestLabKernelUpdate is stricter about guests).
		logf("\nlabdemo: attempt %d failed (%v) on a fault of the nested lab (nested SVM under QEMU TCG does this now and then):\n\t%s\nlabdemo: running the demo once more\n",
			attempt, err, strings.Join(fault, "\n\t"))
		vm.Kill()
	}

	rule := strings.Repeat("=", 78)
	fmt.Println()
	fmt.Println(rule)
	if tl := r.UpdateTimeline(); len(tl) > 0 {
		fmt.Println("The host update, as `pmvm host restore` printed it on the new kernel")
		fmt.Println("(the steps before the kexec come from state_dir/update-timeline.json):")
		fmt.Println()
		for _, l := range tl {
			fmt.Println("  " + l)
		}
		fmt.Println()
	}
	fmt.Println("What the lab checked:")
	for _, l := range r.Summary() {
		fmt.Println("  " + l)
	}
	fmt.Println(rule)
	problems := append(append([]string(nil), r.RefusalProblems...), r.Problems...)
	for _, p := range problems {
		fmt.Println("PROBLEM:", p)
	}
	if err != nil {
		if fault := nestedLabFault(vm); len(fault) > 0 {
			logf("labdemo: the nested lab faulted by itself (nested SVM under QEMU TCG does that now and then), so run it again:\n\t%s",
				strings.Join(fault, "\n\t"))
		}
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d problems (above)", len(problems))
	}
	return nil
}

// nestedLabFault returns the console lines showing the nested lab failing
// by itself: the lab host's own kernel (lab.HostTroubleOf), or a guest
// triple fault, which nested SVM under TCG also produces now and then.
func nestedLabFault(vm *lab.VM) []string {
	out := lab.HostTroubleOf(vm)
	for _, l := range vm.Lines() {
		if strings.HasPrefix(l, "[vm") && strings.Contains(l, "triple fault") {
			out = append(out, l)
		}
	}
	return out
}
