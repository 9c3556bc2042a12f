package qa

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmvm/pmvm/qa/lab"
	"github.com/pmvm/pmvm/qa/qmp"
)

// Tests for persistent memory on device-dax and guest S3 through the
// qemu-guest-agent. See qa/lab/scenario.go for the lab host scripts and
// qa/lab/guestinit.go for the guest inits.

func fields(s string) map[string]string { return lab.Fields(s) }

// TestGuestAgentUnderQEMU boots the S3 test's guest image (Debian's
// qemu-ga on COM2, the pattern daemon, the resume loop) directly under TCG
// QEMU, with COM2 on a unix socket and S3 enabled: qga answers guest-ping,
// guest-suspend-ram puts the guest in S3, QMP system_wakeup resumes it
// with its memory intact and the agent still answering, and an RTC alarm
// the guest arms wakes it by itself. This proves the guest side of
// TestLabSuspendWake independently of pmvm.
func TestGuestAgentUnderQEMU(t *testing.T) {
	l := newLab(t)
	k, err := l.Kernel(lab.Kernel61)
	if err != nil {
		t.Fatal(err)
	}
	seed := rand.Uint64() >> 1
	g, err := l.Guest(k, lab.GuestSpec{
		Name:    "guest-qga",
		Agent:   true,
		Pattern: true,
		Init:    lab.PMGuestInit(lab.PMGuest{Seed: seed, RTCAfter: 1, RTCSeconds: 8}),
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	qgaSock, qmpSock := filepath.Join(dir, "qga.sock"), filepath.Join(dir, "qmp.sock")
	q := lab.DirectGuest(g)
	q.Name = "l2-qga"
	q.MemoryMiB = 256
	q.Timeout = 5 * time.Minute
	q.AddAgentSerial(qgaSock)
	q.AddQMP(qmpSock)
	q.EnableS3()
	t0 := time.Now()
	vm := start(t, l, q, "[l2] ")
	if ms := waitFor(t, vm, `PMVM-GUEST mem-sleep=(.*)`, 3*time.Minute)[1]; !strings.Contains(ms, "[deep]") {
		t.Errorf("mem_sleep = %q, want [deep] (S3)", ms)
	}
	bootID := waitFor(t, vm, `PMVM-GUEST boot_id=(\S+)`, time.Minute)[1]
	waitFor(t, vm, `PMVM-GUEST qga-started`, time.Minute)
	filled := fields(waitFor(t, vm, `PMVM-GUEST pattern-filled (.*)`, 3*time.Minute)[1])
	waitFor(t, vm, `PMVM-GUEST ready`, time.Minute)
	t.Logf("guest ready after %v; pattern %s bytes in %s s", time.Since(t0), filled["bytes"], filled["secs"])

	monitor, err := qmp.Dial(qmpSock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer monitor.Close()
	agent, err := lab.DialAgent(qgaSock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	if err := agent.Sync(within(t, time.Minute)); err != nil {
		t.Fatalf("qemu-ga: %v; %s", err, tail(vm))
	}
	if err := agent.Ping(within(t, 10*time.Second)); err != nil {
		t.Fatalf("guest-ping: %v", err)
	}
	info, err := agent.Info(within(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("qemu-ga version %s answers guest-ping", info.Version)
	if !strings.HasPrefix(info.Version, "7.2") {
		t.Errorf("qemu-ga version %q, want Debian 12's 7.2", info.Version)
	}

	// Cycle 1: agent suspend, QMP wakeup.
	t1 := time.Now()
	if err := agent.SuspendRAM(within(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := monitor.WaitStatus("suspended", 2*time.Minute); err != nil {
		t.Fatalf("after guest-suspend-ram: %v; %s", err, tail(vm))
	}
	t.Logf("guest in S3 %v after guest-suspend-ram", time.Since(t1))
	if _, err := monitor.Execute("system_wakeup", nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r := fields(waitFor(t, vm, `PMVM-GUEST resumed n=1 (.*)`, 2*time.Minute)[1])
	checkResume(t, 1, r, bootID, time.Now())
	waitFor(t, vm, `PMVM-GUEST pattern-verify ok .*round=1 `, 3*time.Minute)
	t.Logf("cycle 1 (agent suspend, QMP wakeup) done in %v", time.Since(t1))
	if err := agent.Sync(within(t, 30*time.Second)); err != nil {
		t.Fatalf("qemu-ga after resume: %v", err)
	}
	if err := agent.Ping(within(t, 10*time.Second)); err != nil {
		t.Fatalf("guest-ping after resume: %v", err)
	}

	// Cycle 2: the guest armed its RTC alarm; no system_wakeup is sent.
	// Under QEMU TCG the guest's rtc-cmos runs its alarm through the HPET's
	// RTC emulation and QEMU wakes it at once rather than at the alarm
	// (and with hpet=off, TCG's TSC restarts at 0 on wake and the resumed
	// guest's timers stall), so only the resume itself is checked here;
	// the alarm timing is TestLabSuspendWake's job, under pmvm (no HPET).
	armed := fields(waitFor(t, vm, `PMVM-GUEST rtc-armed n=2 (.*)`, time.Minute)[1])
	t2 := time.Now()
	if err := agent.SuspendRAM(within(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	r = fields(waitFor(t, vm, `PMVM-GUEST resumed n=2 (.*)`, 2*time.Minute)[1])
	checkResume(t, 2, r, bootID, time.Now())
	if d, a := atoi(r["date"]), atoi(armed["alarm"]); d < a-1 {
		t.Logf("note: resumed at %d, %d s before the RTC alarm at %d (QEMU TCG + HPET wakes at once)", d, a-d, a)
	}
	waitFor(t, vm, `PMVM-GUEST pattern-verify ok .*round=2 `, 3*time.Minute)
	t.Logf("cycle 2 (agent suspend with the RTC alarm armed, no system_wakeup) done in %v", time.Since(t2))
	if err := agent.Sync(within(t, 30*time.Second)); err != nil {
		t.Fatalf("qemu-ga after the second resume: %v", err)
	}
	monitor.Execute("quit", nil, 10*time.Second)
	vm.Wait(30 * time.Second)
}

// within is a context for one agent call that ends after d (or with the test).
func within(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// checkResume checks a "PMVM-GUEST resumed" line seen at time seen.
func checkResume(t testing.TB, n int, r map[string]string, bootID string, seen time.Time) {
	t.Helper()
	if r["boot_id"] != bootID {
		t.Errorf("resume %d: boot_id %s, want %s", n, r["boot_id"], bootID)
	}
	if r["cpus-online"] != "0-1" {
		t.Errorf("resume %d: cpus-online %s, want 0-1", n, r["cpus-online"])
	}
	if r["pm-exit"] != strconv.Itoa(n) {
		t.Errorf("resume %d: %s \"PM: suspend exit\" lines in dmesg", n, r["pm-exit"])
	}
	if skew := atoi(r["date"]) - seen.Unix(); skew > 2 || skew < -2 {
		t.Errorf("resume %d: guest clock %s is %d s off this machine's", n, r["date"], skew)
	}
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func tail(vm *lab.VM) string {
	return "last console lines:\n\t" + strings.Join(vm.Tail(40), "\n\t")
}

// TestLabDax: in the lab host, ndctl turns the memmap= reservation into
// /dev/dax0.0; "pmvm check" reports the block on it as surviving a kexec
// and refuses anonymous RAM in mode = "reboot" naming the block; pmvm boots
// the guest with its RAM on /dev/dax0.0; the guest writes a marker page
// and prints its guest-physical address; after the guest powered off, the
// lab host reads the marker back from the device at that offset.
func TestLabDax(t *testing.T) { inLabAttempts(t, testLabDax) }

func testLabDax(t testing.TB) {
	seed := rand.Uint64() >> 1
	t.Logf("seed %#x", seed)
	vm, t1 := bootStandard(t, lab.DaxStandard(seed), "l1-dax", 5*time.Minute)
	r, err := lab.CheckDaxRun(vm, seed, 4*time.Minute)
	if r.DaxSize > 0 {
		t.Logf("/dev/dax0.0: %d bytes (%d MiB), align %d", r.DaxSize, r.DaxSize>>20, r.DaxAlign)
	}
	for _, p := range r.Problems {
		t.Error(p)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest marker at guest-physical %#x read back from /dev/dax0.0 after %v", r.GPA, time.Since(t1))
	waitFor(t, vm, `PMVM-LAB scenario-exit=0`, time.Minute)
	if err := vm.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
}

// suspendPlan is TestLabSuspendWake's: 3 pmvm-driven cycles, one RTC
// cycle, one suspend without an agent.
var suspendPlan = lab.SuspendPlan{Cycles: 3, RTC: true, NoAgent: true, NoAgentTimeout: "10s"}

// TestLabSuspendWake: pmvm runs a 2-vCPU guest with qemu-ga; the guest
// fills half its RAM with a pattern. Three times: pmvm suspend (through
// the agent), pmvm status says suspended, pmvm wakeup; the guest reports
// the resume with both CPUs, the same boot_id and a wall clock within 2 s
// of the lab host's, and its pattern intact. Then the guest arms its RTC
// alarm, pmvm suspends it and nobody wakes it: the alarm must. Last, with
// qemu-ga stopped, pmvm suspend must fail within its timeout with a
// message and the guest keep running.
func TestLabSuspendWake(t *testing.T) { inLabAttempts(t, testLabSuspendWake) }

func testLabSuspendWake(t testing.TB) {
	vm, t1 := bootStandard(t, lab.SuspendStandard(rand.Uint64()>>1, suspendPlan), "l1-pm", 5*time.Minute)
	r, err := lab.CheckSuspendRun(vm, suspendPlan, lab.SuspendExpect{CPUsOnline: "0-1", MaxSkew: 2, NoAgentTimeout: 10}, 4*time.Minute)
	t.Logf("guest clock %+d s from the lab host's before any suspend", r.ReadySkew)
	for _, c := range r.Cycles {
		how := "pmvm wakeup"
		if c.RTC {
			how = "RTC alarm"
		}
		t.Logf("cycle %d (%s): suspend took %d s; guest date %d, lab host %d; pattern %s", c.N, how, c.SuspendSecs, c.GuestDate, c.L1Date, c.Verify)
	}
	if r.NoAgent != nil {
		t.Logf("suspend without agent: exit %d after %d s: %s", r.NoAgent.Exit, r.NoAgent.Secs, strings.Join(r.NoAgent.Output, " / "))
	}
	for _, p := range r.Problems {
		t.Error(p)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("all cycles done after %v", time.Since(t1))
	waitFor(t, vm, `PMVM-LAB scenario-exit=0`, time.Minute)
	if err := vm.Wait(time.Minute); err != nil {
		t.Fatal(err)
	}
}
