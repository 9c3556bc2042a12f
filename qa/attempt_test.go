package qa

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/pmvm/pmvm/qa/lab"
)

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
	for n := 1; ; n++ {
		a := &attemptT{T: t, n: n}
		a.run(body)
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

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}
