package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakePmvm stands in for pmvm and its guest in SuspendScenario: "run"
// plays a PMGuestInit guest (boot_id, ready, resumed lines, RTC alarm,
// qga-stopped, heartbeats) and suspend/status/wakeup talk to it through
// files in $FAKE_STATE, as the real CLI talks to pmvm's control socket.
// FAKE_BUG=status makes status lie ("running") right after a suspend.
var fakePmvm = func() string {
	b, err := os.ReadFile("testdata/fake-pmvm.sh")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// scenarioHarness runs a lab scenario on this machine under busybox sh
// (the lab host's shell and applets) through the QEMU runner, with
// fakePmvm as pmvm.
func scenarioHarness(t *testing.T, scenario string, env ...string) *VM {
	t.Helper()
	l, err := New(t.Logf)
	require.NoError(t, err)
	bb, err := l.BusyboxBinary()
	require.NoError(t, err)
	dir := t.TempDir()
	bbdir := filepath.Join(dir, "bb")
	fakebin := filepath.Join(dir, "fakebin")
	state := filepath.Join(dir, "state")
	for _, d := range []string{bbdir, fakebin, state} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	out, err := exec.Command(bb, "--install", "-s", bbdir).CombinedOutput()
	require.NoError(t, err, string(out))
	require.FileExists(t, filepath.Join(bbdir, "sh"))
	shebang := "#!" + filepath.Join(bbdir, "sh") + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(fakebin, "pmvm"), []byte(shebang+fakePmvm), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "lib.sh"), []byte(ScenarioLib), 0o644))
	scenario = strings.ReplaceAll(scenario, ". /lab/lib.sh", ". "+filepath.Join(dir, "lib.sh"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "scenario.sh"), []byte(scenario), 0o644))
	runner := shebang + fmt.Sprintf("export PATH=%s:%s LABTMP=%s FAKE_STATE=%s %s\n", fakebin, bbdir, dir, state, strings.Join(env, " ")) +
		`echo "PMVM-LAB kvm-ready"
sh ` + filepath.Join(dir, "scenario.sh") + `
echo "PMVM-LAB scenario-exit=$?"
`
	q := fakeQEMU(t, "")
	require.NoError(t, os.WriteFile(q.Binary, []byte(runner), 0o755))
	q.Timeout = 2 * time.Minute
	q.Echo = func(s string) { t.Log(s) }
	vm, err := testLab(t).Start(q)
	require.NoError(t, err)
	t.Cleanup(vm.Kill)
	return vm
}

// TestSuspendScenarioWithFakePmvm runs the real SuspendScenario and
// CheckSuspendRun against fakePmvm: the shell plumbing (background pmvm,
// console file and relay, wait_for, run_cmd, pmvm_stop) and the checker
// agree with each other before the lab runs them against the real pmvm.
func TestSuspendScenarioWithFakePmvm(t *testing.T) {
	plan := SuspendPlan{Cycles: 3, RTC: true, NoAgent: true, NoAgentTimeout: "1s"}
	vm := scenarioHarness(t, SuspendScenario(plan), "RTC_AFTER=3", "STOP_AFTER=4")
	r, err := CheckSuspendRun(vm, plan, SuspendExpect{CPUsOnline: "0-1", NoAgentTimeout: 1}, time.Minute)
	require.NoError(t, err)
	require.Empty(t, r.Problems)
	require.Equal(t, "b00t", r.BootID)
	require.Equal(t, "s2idle [deep]", r.MemSleep)
	require.Len(t, r.Cycles, 4)
	require.True(t, r.Cycles[3].RTC)
	require.NotZero(t, r.Cycles[3].Alarm)
	require.Equal(t, []string{"labguest: suspended"}, r.Cycles[0].Status)
	require.NotNil(t, r.NoAgent)
	require.Equal(t, 1, r.NoAgent.Exit)
	require.Contains(t, strings.Join(r.NoAgent.Output, "\n"), "did not answer")
	require.Equal(t, 4, r.PmvmExit)
	_, err = vm.WaitFor(mustRe(`PMVM-LAB scenario-exit=0`), 30*time.Second)
	require.NoError(t, err)
	// The relay shows the guest console with a prefix and without \r.
	require.Contains(t, strings.Join(vm.Lines(), "\n"), "[l2] PMVM-GUEST ready date=")
}

// TestSuspendScenarioFailsLoudly: a pmvm whose status does not say
// suspended after "pmvm suspend" ends the scenario with an ERROR line
// naming the step, and the checker returns it with the console tail.
func TestSuspendScenarioFailsLoudly(t *testing.T) {
	plan := SuspendPlan{Cycles: 1}
	vm := scenarioHarness(t, SuspendScenario(plan), "FAKE_BUG=status")
	_, err := CheckSuspendRun(vm, plan, SuspendExpect{}, time.Minute)
	require.Error(t, err)
	require.Contains(t, err.Error(), "PMVM-LAB ERROR: pmvm status labguest right after pmvm suspend returned (cycle 1) does not say suspended")
}

func TestWaitForSeesPmvmExit(t *testing.T) {
	// pmvm exits without the awaited line: wait_for says so at once
	// instead of running into its timeout.
	vm := scenarioHarness(t, `. /lab/lib.sh
pmvm_start /lab/guest.toml
(sleep 1; pmvm_stop_fake=1; kill -TERM $PMVM_PID) &
t0=$(now)
wait_for 'never printed' 60 && fail "wait_for matched nothing"
lab "waited=$(( $(now) - t0 ))"
pmvm_wait 10
`)
	m, err := vm.WaitFor(mustRe(`PMVM-LAB wait_for /never printed/: pmvm exited with (\d+) first`), 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, "4", m[1])
	m, err = vm.WaitFor(mustRe(`PMVM-LAB waited=(\d+)`), 30*time.Second)
	require.NoError(t, err)
	require.Less(t, int(atoi64(m[1])), 10)
	_, err = vm.WaitFor(mustRe(`PMVM-LAB pmvm-exit=4`), 30*time.Second)
	require.NoError(t, err)
}

func TestRunstate(t *testing.T) {
	require.Equal(t, "running (since 09:33:03.514, 16.242s)", runstate([]string{
		"name:      labguest", "runstate:  running (since 09:33:03.514, 16.242s)", "last:      running -> suspended at 09:29:52.999"}))
	require.Equal(t, "labguest: suspended", runstate([]string{"labguest: suspended"}))
}

func TestFields(t *testing.T) {
	require.Equal(t, map[string]string{"n": "1", "cpus-online": "0-1", "date": "17"},
		Fields("n=1 cpus-online=0-1 words date=17"))
}

func mustRe(s string) *regexp.Regexp { return regexp.MustCompile(s) }
