package qa

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pmvm/pmvm/qa/lab"
	"github.com/pmvm/pmvm/qa/labrun"
)

// TestMain records the package in make test's summary: its tests always
// run in lab hosts they boot themselves (real Linux guests).
func TestMain(m *testing.M) {
	t0 := time.Now()
	code := m.Run()
	labrun.Append(labrun.Record{Kind: labrun.KindPackage, Name: "qa", Where: labrun.WhereLab, Code: code,
		Seconds: time.Since(t0).Seconds(), Note: "real Linux guests; each test boots its own lab host"})
	os.Exit(code)
}

// A lab test that failed while the lab host's own kernel panicked or froze
// (lab.HostTrouble: the nested TCG lab does that by itself now and then,
// and pmvm, a process in it, cannot) is run once more, saying why in the
// log. A failure without such lines, or a second failure, fails the test.

// attemptT is one attempt of a lab test: it records failures instead of
// failing the test, so that the attempt can be judged (and run again)
// once it is over. Everything else goes to the test.
type attemptT struct {
	*testing.T
	n      int
	errs   []string
	failed bool
	vms    []*lab.VM // lab hosts started in this attempt
}

// attemptAborted is the panic value of an attempt's Fatal.
type attemptAborted struct{}

func (a *attemptT) Error(args ...any) { a.Errorf("%s", fmt.Sprintln(args...)) }
func (a *attemptT) Errorf(format string, args ...any) {
	a.T.Helper()
	msg := strings.TrimSuffix(fmt.Sprintf(format, args...), "\n")
	a.T.Logf("attempt %d: ERROR: %s", a.n, msg)
	a.errs = append(a.errs, msg)
	a.failed = true
}
func (a *attemptT) Fail()        { a.failed = true }
func (a *attemptT) Failed() bool { return a.failed }
func (a *attemptT) FailNow()     { a.failed = true; panic(attemptAborted{}) }
func (a *attemptT) Fatal(args ...any) {
	a.T.Helper()
	a.Error(args...)
	a.FailNow()
}
func (a *attemptT) Fatalf(format string, args ...any) {
	a.T.Helper()
	a.Errorf(format, args...)
	a.FailNow()
}

// run runs body as this attempt; a Fatal ends it early.
func (a *attemptT) run(body func(t testing.TB)) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(attemptAborted); !ok {
				panic(r)
			}
		}
	}()
	body(a)
}

// inLabAttempts runs a lab test body, once more if its first attempt
// failed while the lab host's own kernel was in trouble (see above).
func inLabAttempts(t *testing.T, body func(t testing.TB)) {
	t.Helper()
	firstFailure := ""
	for n := 1; ; n++ {
		a := &attemptT{T: t, n: n}
		a.run(body)
		for _, vm := range a.vms {
			judgeGuests(a, vm)
		}
		if n == 2 {
			// A pass on the second attempt is reported as such, with
			// the first attempt's reason, in make test's summary.
			code := 0
			if a.failed {
				code = 1
			}
			labrun.Append(labrun.Record{Kind: labrun.KindRetry, Name: t.Name(), Where: labrun.WhereLab, Code: code, Note: firstFailure})
		}
		if !a.failed {
			return
		}
		var trouble []string
		for _, vm := range a.vms {
			trouble = append(trouble, lab.HostTroubleOf(vm)...)
		}
		if n == 2 || len(trouble) == 0 {
			if len(trouble) > 0 {
				t.Logf("the lab host's own kernel was in trouble again:\n\t%s", strings.Join(trouble, "\n\t"))
			}
			t.Log(hostLoad())
			for _, e := range a.errs {
				t.Error(e)
			}
			t.FailNow()
		}
		firstFailure = fmt.Sprintf("%s (lab host: %s)", firstLine(firstOr(a.errs, "no message")), trouble[0])
		t.Logf("attempt %d failed (%s) while the lab host's own kernel was in trouble, which pmvm, a process in it, cannot cause:\n\t%s\n%s\nrunning the lab once more",
			n, firstOr(a.errs, "no message"), strings.Join(trouble, "\n\t"), hostLoad())
		for _, vm := range a.vms {
			vm.Kill()
		}
	}
}

// hostLoad describes this machine's load: a starved lab host stalls.
func hostLoad() string {
	avg, _ := os.ReadFile("/proc/loadavg")
	s := "this machine's load average: " + strings.TrimSpace(string(avg))
	if out, err := exec.Command("ps", "-eo", "pid,pcpu,etime,comm", "--sort=-pcpu").Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) > 6 {
			lines = lines[:6]
		}
		s += "; busiest processes:\n\t" + strings.Join(lines, "\n\t")
	}
	return s
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}
