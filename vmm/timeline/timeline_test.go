package timeline

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStringAndDurations proves a process timeline's printout (the one
// pmvm save and a resume print): one line per step in time order with the
// time since the first step and since the step before, then the total;
// and that Between, Total and Last measure from the steps recorded.
func TestStringAndDurations(t *testing.T) {
	t0 := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	tl := New("save")
	tl.Add(t0, "", "save requested", "")
	tl.Add(t0.Add(250*time.Millisecond), "", "state durable", "") // added before the step it follows
	tl.Add(t0.Add(200*time.Millisecond), "", "guest in S3", "")

	assert.Equal(t, "save timeline:\n"+
		"          0s          0s  save requested\n"+
		"       200ms       200ms  guest in S3\n"+
		"       250ms        50ms  state durable\n"+
		"  total 250ms\n", tl.String())
	d, ok := tl.Between("guest in S3", "state durable")
	assert.True(t, ok)
	assert.Equal(t, 50*time.Millisecond, d)
	_, ok = tl.Between("save requested", "pmvm exited")
	assert.False(t, ok, "a step not recorded")
	assert.Equal(t, 250*time.Millisecond, tl.Total())
	at, ok := tl.Last("", "guest in S3")
	assert.True(t, ok)
	assert.True(t, at.Equal(t0.Add(200*time.Millisecond)))
	assert.Zero(t, New("empty").Total())
}

// TestAddDropsMonotonicReadings proves steps hold wall-clock times only,
// so that steps read back after a reboot compare with new ones.
func TestAddDropsMonotonicReadings(t *testing.T) {
	tl := New("x")
	tl.Mark("vm1", "a", "detail")
	e := tl.Sorted()[0]
	assert.Equal(t, e.At, e.At.Round(0), "no monotonic reading")
	assert.Equal(t, Event{At: e.At, VM: "vm1", What: "a", Detail: "detail"}, e)
}

// TestReadsTheControlReplyOfAnOlderPMVM proves that a save's timeline sent
// over the control socket by a pmvm from before the one timeline type
// ({"name", "steps": [{"what", "at"}]}: a VM started before an upgrade,
// saved by the new pmvm host update) reads into the same events, and that
// the one type's own encoding reads back as it was.
func TestReadsTheControlReplyOfAnOlderPMVM(t *testing.T) {
	old := `{"name":"save","steps":[{"what":"save requested","at":"2026-03-04T10:00:00Z"},{"what":"guest in S3","at":"2026-03-04T10:00:00.2Z"}]}`
	var tl Timeline
	require.NoError(t, json.Unmarshal([]byte(old), &tl))
	assert.Equal(t, "save", tl.Name)
	require.Len(t, tl.Events, 2)
	assert.Equal(t, "guest in S3", tl.Events[1].What)
	assert.True(t, tl.Events[1].At.Equal(time.Date(2026, 3, 4, 10, 0, 0, 200e6, time.UTC)))

	b, err := json.Marshal(&tl)
	require.NoError(t, err)
	var back Timeline
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, tl.Name, back.Name)
	assert.Equal(t, tl.Events, back.Events)
}

// TestFileRoundTrip proves the timeline file (what crosses a kexec) reads
// back with its header and events, and that a file of another format
// version is refused with the versions named.
func TestFileRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	tl := &Timeline{Version: Version, ID: "20260304T100000.000Z", Kernel: "6.12.100-amd64"}
	tl.Add(t0, "", "update started", "2 VM(s)")
	tl.Add(t0.Add(time.Second), "web1", "save requested", "was running")
	path := filepath.Join(t.TempDir(), "update-timeline.json")
	require.NoError(t, Write(path, tl))
	back, err := Read(path)
	require.NoError(t, err)
	assert.Equal(t, tl.ID, back.ID)
	assert.Equal(t, tl.Kernel, back.Kernel)
	assert.Equal(t, tl.Events, back.Events)

	require.NoError(t, os.WriteFile(path, []byte(`{"version": 9, "events": []}`), 0o600))
	_, err = Read(path)
	assert.ErrorContains(t, err, "format version 9, this pmvm reads 1")
}
