package kexec

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm/lifecycle"
	"github.com/pmvm/pmvm/vmm/timeline"
)

// TestTimelineRoundTripAndBlackout proves the timeline file survives a
// write and read (what crosses the kexec), that restore steps appended
// after it sort into place, and that each VM's blackout runs exactly from
// its save request to its first "running" after it, across the kexec and
// the kernel boot; a VM not running again is reported as such.
func TestTimelineRoundTripAndBlackout(t *testing.T) {
	t0 := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tl := NewTimeline(t0)
	tl.Kernel = "6.12.100-amd64"
	tl.Add(at(0), "", StepUpdateStarted, "")
	tl.Add(at(10), "web1", lifecycle.StepSaveRequested, "was running")
	tl.Add(at(12), "db2", lifecycle.StepSaveRequested, "was running")
	tl.Add(at(400), "web1", lifecycle.StepGuestInS3, "")
	tl.Add(at(420), "web1", lifecycle.StepStateDurable, "")
	tl.Add(at(900), "db2", lifecycle.StepGuestInS3, "")
	tl.Add(at(950), "db2", lifecycle.StepStateDurable, "")
	tl.Add(at(1000), "", StepKernelLoaded, "")
	tl.Add(at(1100), "", StepKexec, "")

	path := filepath.Join(t.TempDir(), "update-timeline.json")
	require.NoError(t, timeline.Write(path, tl))
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	// after the kexec
	back, err := timeline.Read(path)
	require.NoError(t, err)
	assert.Equal(t, tl.ID, back.ID)
	assert.Equal(t, "6.12.100-amd64", back.Kernel)
	require.Len(t, back.Events, len(tl.Events))
	for i := range tl.Events {
		assert.True(t, tl.Events[i].At.Equal(back.Events[i].At), "event %d time", i)
		assert.Equal(t, tl.Events[i].What, back.Events[i].What)
	}
	back.Add(at(14100), "web1", StepRestoreStarted, "pid 7")
	back.Add(at(11000), "", StepKernelBooted, "6.12.100-amd64") // added later, earlier in time
	back.Add(at(14600), "web1", StepRunning, "")
	back.Add(at(14700), "db2", StepRestoreStarted, "")

	bs := Blackouts(back)
	require.Len(t, bs, 2)
	assert.Equal(t, Blackout{VM: "web1", From: at(10), To: at(14600), Took: 14590 * time.Millisecond, Done: true}, bs[0])
	assert.Equal(t, "db2", bs[1].VM)
	assert.False(t, bs[1].Done)

	var out bytes.Buffer
	FormatTimeline(&out, back)
	s := out.String()
	t.Log("\n" + s)
	assert.Contains(t, s, "web1  14.59s")
	assert.Contains(t, s, "db2   not running again yet")
	iBoot := bytes.Index(out.Bytes(), []byte("kernel booted"))
	iKexec := bytes.Index(out.Bytes(), []byte("  kexec"))
	iRestore := bytes.Index(out.Bytes(), []byte("pmvm run --incoming started"))
	assert.True(t, iKexec < iBoot && iBoot < iRestore, "steps print in time order")

	// A file of another format version is refused.
	require.NoError(t, os.WriteFile(path, []byte(`{"version": 9, "events": []}`), 0o600))
	_, err = timeline.Read(path)
	assert.ErrorContains(t, err, "format version 9")
}

// TestBootTimeFromUptime proves "kernel booted" is placed at now minus
// /proc/uptime, and that BootTime works on this host.
func TestBootTimeFromUptime(t *testing.T) {
	now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	bt, err := bootTimeFrom("12.34 40.00\n", now)
	require.NoError(t, err)
	assert.Equal(t, now.Add(-12340*time.Millisecond), bt)
	_, err = bootTimeFrom("", now)
	assert.Error(t, err)
	real, err := BootTime()
	require.NoError(t, err)
	assert.True(t, real.Before(time.Now()))
}
