package lab

import (
	"fmt"
	"regexp"
	"strings"
	"text/tabwriter"
)

// Ends a fault matrix case can have: the guest resumed with its memory
// intact, or pmvm refused with guest memory untouched (the device's
// SHA-256 the same before and after), or, for a fault injected while the
// guest runs, refused with the running guest left alone.
const (
	EndResumed        = "resumed intact"
	EndRefused        = "refused, memory untouched"
	EndRefusedRunning = "refused, guest runs on"
)

// MatrixCase is one fault of the fault matrix: where in save or restore it
// hits, what it is, the end it must have, and what a refusal must say.
// Args are the pmvm run arguments of a case the scenario runs in its
// batch of refused resumes after the first save (empty: a case the
// scenario drives itself, at its own step).
type MatrixCase struct {
	Tag, Step, Fault, Expect, Want, Args string
}

// MatrixCases are RebootScenario's faults, in the order it injects them.
var MatrixCases = []MatrixCase{
	{"truncated", "restore: state file read", "state file truncated to half", EndRefused, "truncated",
		"/lab/guest.toml --incoming /tmp/truncated.state"},
	{"corrupted", "restore: state file read", "one byte of the state file flipped", EndRefused, "checksum",
		"/lab/guest.toml --incoming /tmp/corrupted.state"},
	{"newer-format", "restore: state file read", "state format newer than pmvm", EndRefused, "newer than this pmvm",
		"/lab/guest.toml --incoming /tmp/newer.state"},
	{"other-vm", "restore: state vs config", "state file of another VM", EndRefused, "holds VM",
		"/lab/other-vm.toml --incoming /tmp/labguest.state"},
	{"wrong-vcpus", "restore: state vs config", "config changed: vcpus 2 -> 1", EndRefused, "vcpus: saved machine has 2, config has 1",
		"/lab/wrong-vcpus.toml --incoming /tmp/labguest.state"},
	{"wrong-memory", "restore: state vs config", "config changed: memory size -> 128MiB", EndRefused, `memory[0] "ram0": saved size`,
		"/lab/wrong-memory.toml --incoming /tmp/labguest.state"},
	{"missing-backing", "restore: backings checked", "memory backing missing (/dev/dax9.0)", EndRefused, "/dev/dax9.0",
		"/lab/missing-dax.toml --incoming /tmp/labguest.state"},
	{"scrubbed", "restore: memory fingerprint", "reboot, not kexec: first 32 MiB of the namespace zeroed", EndRefused, "the memory did not survive",
		"/lab/guest.toml --incoming /tmp/labguest.state"},
	{"second-pmvm", "run: guest running", "second pmvm (VM otherguest) on the same /dev/dax0.0", EndRefusedRunning, "is in use by", ""},
	{"killed-resume", "restore: memory mapped, vCPUs not run", "kill -9 of the resuming pmvm, then resume again", EndResumed, "", ""},
	{"disk-full", "save: state file written", "state_dir full (a full 4 KiB tmpfs)", EndRefusedRunning, "no space left on device", ""},
	{"killed-save-new", "save: guest in S3, state not written", "kill -9 of pmvm, then resume the state path", EndRefused, "already resumed", ""},
	{"killed-save-old", "save: guest in S3, state not written", "kill -9 of pmvm, then resume the last spent state", EndRefused, "already resumed", ""},
	{"killed-late-resume", "restore: state loaded, vCPUs not run", `kill -9 of the resuming pmvm at "state restored", then resume again`, EndResumed, "", ""},
}

// MatrixRow is a case and the end observed in the lab's output.
type MatrixRow struct {
	MatrixCase
	Observed string // one of the End* constants when it ended as one of them
	Detail   string // what pmvm said, or why the end is not what it should be
}

// OK says whether the case ended as it must.
func (r MatrixRow) OK() bool { return r.Observed == r.Expect }

var (
	mxSumRe  = regexp.MustCompile(`^mx-sum case=(\S+) sha256=([0-9a-f]+)$`)
	mxExitRe = regexp.MustCompile(`^mx-(\S+)-exit=(\d+) `)
	mxEndRe  = regexp.MustCompile(`^mx-(\S+)-(alive|end|pattern|landed)=(\S+)$`)
)

// mxFacts is what the scenario printed about one case.
type mxFacts struct {
	out                 []string // its command's output
	exit                string   // its command's exit code; "" if it did not run
	before, after       string   // the device's SHA-256 before and after it
	alive, end, pattern string   // second-pmvm: the first pmvm still ran; killed-resume: resumed|refused, pattern ok|BAD
	landed              string   // killed-*resume: where the kill landed (before-the-move-aside, after-the-move-aside, after-the-wake)
	ran                 bool
}

// JudgeMatrix reads the scenario's lines (console lines after "PMVM-LAB ")
// and judges each of MatrixCases. A refused case ends EndRefused only if
// pmvm exited non-zero, said Want, and the device hashed the same before
// and after it; the before hash is the last "mx-sum" line printed before
// the case's first line.
func JudgeMatrix(lines []string) []MatrixRow {
	facts := map[string]*mxFacts{}
	get := func(tag string) *mxFacts {
		if facts[tag] == nil {
			facts[tag] = &mxFacts{}
		}
		return facts[tag]
	}
	known := map[string]bool{}
	for _, c := range MatrixCases {
		known[c.Tag] = true
	}
	lastSum := ""
	start := func(tag string) *mxFacts {
		f := get(tag)
		if !f.ran {
			f.ran, f.before = true, lastSum
		}
		return f
	}
	for _, l := range lines {
		l = strings.TrimRight(l, "\r")
		if m := mxSumRe.FindStringSubmatch(l); m != nil {
			if known[m[1]] {
				start(m[1]).after = m[2]
			}
			lastSum = m[2]
			continue
		}
		if m := mxExitRe.FindStringSubmatch(l); m != nil && known[m[1]] {
			start(m[1]).exit = m[2]
			continue
		}
		if m := mxEndRe.FindStringSubmatch(l); m != nil && known[m[1]] {
			f := start(m[1])
			switch m[2] {
			case "alive":
				f.alive = m[3]
			case "end":
				f.end = m[3]
			case "pattern":
				f.pattern = m[3]
			case "landed":
				f.landed = m[3]
			}
			continue
		}
		if tag, rest, ok := strings.Cut(strings.TrimPrefix(l, "mx-"), ": "); ok && strings.HasPrefix(l, "mx-") && known[tag] {
			f := start(tag)
			f.out = append(f.out, rest)
		}
	}
	rows := make([]MatrixRow, 0, len(MatrixCases))
	for _, c := range MatrixCases {
		rows = append(rows, judgeCase(c, facts[c.Tag]))
	}
	return rows
}

func judgeCase(c MatrixCase, f *mxFacts) MatrixRow {
	r := MatrixRow{MatrixCase: c}
	if f == nil || !f.ran {
		r.Observed, r.Detail = "not run", "the scenario printed nothing about this case (did an earlier case lose the guest?)"
		return r
	}
	said := saying(f.out, c.Want)
	switch c.Expect {
	case EndResumed:
		landed := "kill landed " + f.landed + "; "
		switch {
		case f.landed == "after-the-wake":
			r.Observed, r.Detail = "not injected: the kill came after the wake", landed+firstOr(said, f.out, "")
		case f.end != "resumed":
			r.Observed, r.Detail = "refused: guest lost", landed+lastOr(f.out, "the resume after the kill did not run the guest")
		case f.pattern != "ok":
			r.Observed, r.Detail = "resumed, memory CHANGED", "pattern-verify "+f.pattern
		default:
			r.Observed, r.Detail = EndResumed, landed+"pattern-verify ok; "+strings.Join(f.out, "; ")
		}
		return r
	}
	switch {
	case f.exit == "":
		r.Observed, r.Detail = "not run", "no exit code for the case's pmvm run"
	case f.exit == "0":
		r.Observed, r.Detail = "NOT refused (exit 0)", strings.Join(f.out, "; ")
	case said == "":
		r.Observed, r.Detail = fmt.Sprintf("refused (exit %s) without saying %q", f.exit, c.Want), firstOr("", f.out, "no output")
	case c.Expect == EndRefusedRunning:
		if f.alive != "yes" {
			r.Observed, r.Detail = "refused, but the guest does not run on", said
		} else if f.pattern != "" && f.pattern != "ok" {
			r.Observed, r.Detail = "refused, guest runs on, memory CHANGED or unchecked", "pattern-verify "+f.pattern+"; "+said
		} else {
			r.Observed, r.Detail = EndRefusedRunning, said
		}
	case f.before == "" || f.after == "":
		r.Observed, r.Detail = "refused, memory not hashed", said
	case f.before != f.after:
		r.Observed, r.Detail = "refused, memory CHANGED", fmt.Sprintf("sha256 %.12s before, %.12s after; %s", f.before, f.after, said)
	default:
		r.Observed, r.Detail = EndRefused, fmt.Sprintf("exit %s, sha256 %.12s same; %s", f.exit, f.after, said)
	}
	return r
}

// saying returns the first line of out that contains want ("" if none,
// or if want is "").
func saying(out []string, want string) string {
	if want == "" {
		return ""
	}
	for _, l := range out {
		if strings.Contains(l, want) {
			return l
		}
	}
	return ""
}

func firstOr(said string, out []string, none string) string {
	if said != "" {
		return said
	}
	if len(out) > 0 {
		return strings.Join(out, "; ")
	}
	return none
}

// lastOr returns the last line of out that says "pmvm run:" (pmvm's
// refusal, after its log lines), else none.
func lastOr(out []string, none string) string {
	for i := len(out) - 1; i >= 0; i-- {
		if strings.Contains(out[i], "pmvm run:") {
			return out[i]
		}
	}
	return none
}

// FormatMatrix is the table the test prints: case | step | fault |
// expected end | observed end | detail (the detail cut to 160 bytes).
func FormatMatrix(rows []MatrixRow) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	fmt.Fprintln(w, "case\t| step\t| fault\t| expected end\t| observed end\t| detail")
	for _, r := range rows {
		d := r.Detail
		if len(d) > 160 {
			d = d[:160] + "..."
		}
		mark := ""
		if !r.OK() {
			mark = " <-- WRONG"
		}
		fmt.Fprintf(w, "%s\t| %s\t| %s\t| %s\t| %s%s\t| %s\n", r.Tag, r.Step, r.Fault, r.Expect, r.Observed, mark, d)
	}
	w.Flush()
	return b.String()
}
