package lab

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testdata/reboot-matrix-console.log is the console of a real
// TestLabRebootResume run (the lab host's lines, with the relayed pmvm and
// guest lines), as VM.WaitFor sees them. Every case ended as it must but
// killed-late-resume: pmvm advances the memory's generation when the state
// is loaded, before it moves the state file aside and wakes the vCPUs, so
// a pmvm killed in between leaves a state that is refused as "already
// resumed" though the guest never ran (a product defect, issue 12).
const matrixFixture = "testdata/reboot-matrix-console.log"

// recordedMatrix returns the fixture's lines after "PMVM-LAB ", as the
// test hands them to JudgeMatrix (VM.PrefixedLines).
func recordedMatrix(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(matrixFixture)
	require.NoError(t, err)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "PMVM-LAB "); ok {
			out = append(out, rest)
		}
	}
	return out
}

func TestJudgeMatrixRecordedRun(t *testing.T) {
	rows := JudgeMatrix(recordedMatrix(t))
	require.Len(t, rows, len(MatrixCases))
	for _, r := range rows {
		if r.Tag == "killed-late-resume" {
			assert.Equal(t, "refused: guest lost", r.Observed, r.Detail)
			assert.Contains(t, r.Detail, "kill landed before-the-move-aside")
			assert.Contains(t, r.Detail, "it was already resumed")
			continue
		}
		assert.True(t, r.OK(), "%s: expected %q, observed %q: %s", r.Tag, r.Expect, r.Observed, r.Detail)
	}
	table := FormatMatrix(rows)
	t.Log("\n" + table)
	assert.Contains(t, table, "case ")
	assert.Equal(t, 1, strings.Count(table, "<-- WRONG"))
	for _, c := range MatrixCases {
		assert.Contains(t, table, c.Tag+" ")
	}
}

// TestJudgeMatrixCatchesWrongEnds edits the recorded run into the wrong
// ends a case can have: each must be judged as what it is.
func TestJudgeMatrixCatchesWrongEnds(t *testing.T) {
	for _, c := range []struct {
		name, tag, old, new, observed string
	}{
		{"memory changed by a refusal", "corrupted", "mx-sum case=corrupted sha256=", "mx-sum case=corrupted sha256=00", "refused, memory CHANGED"},
		{"not refused", "truncated", "mx-truncated-exit=1 ", "mx-truncated-exit=0 ", "NOT refused (exit 0)"},
		{"refused without saying why", "scrubbed", "the memory did not survive", "no", `refused (exit 1) without saying "the memory did not survive"`},
		{"the second pmvm took the guest down", "second-pmvm", "mx-second-pmvm-alive=yes", "mx-second-pmvm-alive=no", "refused, but the guest does not run on"},
		{"the guest not woken after a failed save", "disk-full", "mx-disk-full-pattern=ok", "mx-disk-full-pattern=none", "refused, guest runs on, memory CHANGED or unchecked"},
		{"the guest lost after a killed resume", "killed-resume", "mx-killed-resume-end=resumed", "mx-killed-resume-end=refused", "refused: guest lost"},
		{"memory changed across a killed resume", "killed-resume", "mx-killed-resume-pattern=ok", "mx-killed-resume-pattern=BAD", "resumed, memory CHANGED"},
		{"a kill that came too late to be the fault", "killed-resume", "mx-killed-resume-landed=before-the-move-aside", "mx-killed-resume-landed=after-the-wake", "not injected: the kill came after the wake"},
		{"a case that never ran", "killed-save-old", "mx-killed-save-old", "dropped", "not run"},
	} {
		t.Run(c.name, func(t *testing.T) {
			lines := recordedMatrix(t)
			edited := 0
			for i, l := range lines {
				if strings.Contains(l, c.old) {
					lines[i] = strings.Replace(l, c.old, c.new, 1)
					edited++
				}
			}
			require.NotZero(t, edited, "the recorded run has no line with %q", c.old)
			var row MatrixRow
			for _, r := range JudgeMatrix(lines) {
				if r.Tag == c.tag {
					row = r
				}
			}
			assert.Equal(t, c.observed, row.Observed, row.Detail)
			assert.False(t, row.OK())
			assert.Contains(t, FormatMatrix([]MatrixRow{row}), "<-- WRONG")
		})
	}
}
