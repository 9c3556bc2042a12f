// Package qa holds the end-to-end tests that run in the lab (see
// README.md, "How the lab works", and package qa/lab): pmvm inside a QEMU
// TCG lab host with nested KVM, booting the Debian 6.1 kernel as its guest.
package qa

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmvm/pmvm/qa/lab"
)

// newLab returns a Lab logging to t; a missing QEMU fails the test (never skips).
func newLab(t testing.TB) *lab.Lab {
	t.Helper()
	l, err := lab.New(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// start boots q with its console streamed to the test log and makes sure it
// is dead when the test ends.
func start(t testing.TB, l *lab.Lab, q lab.QEMU, prefix string) *lab.VM {
	t.Helper()
	q.Echo = func(s string) { t.Log(prefix + s) }
	vm, err := l.Start(q)
	if errors.Is(err, lab.ErrNoQEMU) {
		t.Fatalf("FAIL, not skipped: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Kill)
	if a, ok := t.(*attemptT); ok {
		a.vms = append(a.vms, vm) // inLabAttempts judges its guests
	} else {
		t.Cleanup(func() { judgeGuests(t, vm) })
	}
	t.Logf("console log: %s", vm.LogPath)
	return vm
}

// bootStandard builds std's images and boots its lab host as name with the
// overall deadline, waiting until nested KVM is ready in it; it returns the
// lab host and when it was started.
func bootStandard(t testing.TB, std lab.Standard, name string, overall time.Duration) (*lab.VM, time.Time) {
	t.Helper()
	l := newLab(t)
	t0 := time.Now()
	b, err := l.BuildStandard(std)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("images built in %v", time.Since(t0))
	q := lab.LabHost(b.Host)
	q.Name = name
	q.Timeout = overall
	t1 := time.Now()
	vm := start(t, l, q, "[lab] ")
	waitFor(t, vm, `PMVM-LAB kvm-ready`, 2*time.Minute)
	t.Logf("L1 kvm-ready after %v", time.Since(t1))
	return vm, t1
}

// judgeGuests fails t for every problem lab.GuestHealthProblems finds in
// the guests' reports on vm's console: every lab test is held to it.
func judgeGuests(t testing.TB, vm *lab.VM) {
	t.Helper()
	for _, p := range lab.GuestHealthProblems(vm.Lines()) {
		t.Errorf("%s (console log: %s)", p, vm.LogPath)
	}
}

func waitFor(t testing.TB, vm *lab.VM, re string, timeout time.Duration) []string {
	t.Helper()
	m, err := vm.WaitFor(regexp.MustCompile(re), timeout)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// guestMarkers waits for the PMVM-GUEST lines of lab.GuestInit and checks them.
func guestMarkers(t testing.TB, vm *lab.VM, k *lab.Kernel, timeout time.Duration) {
	t.Helper()
	if got := waitFor(t, vm, `PMVM-GUEST uname=(\S+)`, timeout)[1]; got != k.Version {
		t.Errorf("guest uname -r = %q, want %q (from %s)", got, k.Version, k.Package)
	}
	if got := waitFor(t, vm, `PMVM-GUEST cpus-online=(\S*)`, timeout)[1]; got != "0-1" {
		t.Errorf("guest cpus-online = %q, want 0-1", got)
	}
	kb, _ := strconv.Atoi(waitFor(t, vm, `PMVM-GUEST memtotal-kb=(\d+)`, timeout)[1])
	if kb < 400*1024 || kb > 512*1024 {
		t.Errorf("guest MemTotal = %d KiB (%d MiB), want 400..512 MiB for 512 MiB of RAM", kb, kb/1024)
	}
	if n := waitFor(t, vm, `PMVM-GUEST acpi-errors=(\d+)`, timeout)[1]; n != "0" {
		var lines []string
		for _, s := range vm.Lines() {
			if strings.Contains(s, "PMVM-GUEST acpi-error:") {
				lines = append(lines, s)
			}
		}
		t.Errorf("guest logged %s ACPI errors:\n%s", n, strings.Join(lines, "\n"))
	}
	waitFor(t, vm, `PMVM-GUEST done`, timeout)
}

// TestGuestImageUnderQEMU boots the guest image (6.1 bzImage + busybox
// initrd) directly under TCG QEMU: it proves the guest image is good
// independently of pmvm.
func TestGuestImageUnderQEMU(t *testing.T) {
	l := newLab(t)
	b, err := l.BuildStandard(lab.Standard{NoPmvm: true, Scenario: lab.KVMCheckScenario})
	if err != nil {
		t.Fatal(err)
	}
	q := lab.DirectGuest(b.Guest)
	q.Timeout = 3 * time.Minute
	vm := start(t, l, q, "[l2] ")
	guestMarkers(t, vm, b.Kernel, 2*time.Minute)
	if err := vm.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestLabKVMReady boots the lab host and checks that nested KVM works in it.
func TestLabKVMReady(t *testing.T) { inLabAttempts(t, testLabKVMReady) }

func testLabKVMReady(t testing.TB) {
	l := newLab(t)
	b, err := l.BuildStandard(lab.Standard{NoPmvm: true, Scenario: lab.KVMCheckScenario})
	if err != nil {
		t.Fatal(err)
	}
	q := lab.LabHost(b.Host)
	q.Timeout = 3 * time.Minute
	t0 := time.Now()
	vm := start(t, l, q, "[l1] ")
	waitFor(t, vm, `PMVM-LAB kvm-ready`, 2*time.Minute)
	t.Logf("L1 kvm-ready after %v", time.Since(t0))
	if got := waitFor(t, vm, `PMVM-LAB nested=(\S+)`, time.Minute)[1]; got != "1" && got != "Y" {
		t.Errorf("kvm_amd nested = %q, want 1", got)
	}
	waitFor(t, vm, `PMVM-LAB scenario-exit=0`, time.Minute)
	if err := vm.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestLabBoot is the end-to-end test: pmvm, inside the lab host, boots the
// Debian 6.1 kernel with 2 vCPUs and 512 MiB and the guest reports back.
func TestLabBoot(t *testing.T) { inLabAttempts(t, testLabBoot) }

func testLabBoot(t testing.TB) {
	const overall = 5 * time.Minute
	l := newLab(t)
	t0 := time.Now()
	b, err := l.BuildStandard(lab.Standard{}) // PmvmRunScenario, DefaultGuestConfig
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("images built in %v; kernel %s (%s)", time.Since(t0), b.Kernel.Version, b.Kernel.Package)
	q := lab.LabHost(b.Host)
	q.Timeout = overall
	t1 := time.Now()
	vm := start(t, l, q, "[lab] ")
	waitFor(t, vm, `PMVM-LAB kvm-ready`, 2*time.Minute)
	t.Logf("L1 kvm-ready after %v", time.Since(t1))
	guestMarkers(t, vm, b.Kernel, overall)
	t.Logf("guest done after %v", time.Since(t1))
	if got := waitFor(t, vm, `PMVM-LAB pmvm-exit=(\d+)`, time.Minute)[1]; got != "0" {
		t.Errorf("pmvm exited with %s, want 0", got)
	}
	if err := vm.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
}
