// Command labdemo builds the lab images and boots the lab host (QEMU TCG with
// nested KVM) with its console on stdout; pmvm runs the guest inside it.
// It exits non-zero if any step fails. `make demo` runs it.
//
//	go run ./qa/cmd/labdemo [-scenario pmvm|kvm|guest|dax|suspend] [-timeout 5m] [-pmvm path]
//
// dax and suspend run TestLabDax's and TestLabSuspendWake's labs and print
// what their checkers found.
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/pmvm/pmvm/qa/lab"
)

func main() {
	scenario := flag.String("scenario", "pmvm", "pmvm: run the guest under pmvm in L1; kvm: only check nested KVM in L1; guest: boot the guest image directly under TCG QEMU; dax: guest RAM on /dev/dax0.0 in L1; suspend: S3 cycles through the guest agent in L1")
	timeout := flag.Duration("timeout", 5*time.Minute, "overall boot timeout")
	pmvm := flag.String("pmvm", "", "use this static pmvm binary instead of building ./cmd/pmvm")
	flag.Parse()
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
