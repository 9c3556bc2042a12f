package kexec

import (
	"bytes"
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRestoreIgnoresAFIFO proves a named pipe called *.state in state_dir
// does not hang pmvm host restore at boot (opening a FIFO for reading
// waits for a writer): it is set aside as not a state file, at once.
func TestRestoreIgnoresAFIFO(t *testing.T) {
	h := testHost(t, t.TempDir())
	log, _ := testLog()
	require.NoError(t, syscall.Mkfifo(filepath.Join(h.StateDir, "pipe.state"), 0o600))

	type result struct {
		rep *RestoreReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		var out bytes.Buffer
		rep, err := Restore(context.Background(), h, RestoreOptions{Log: log, Out: &out, PMVM: fakePMVMCommand(t)})
		done <- result{rep, err}
	}()
	select {
	case r := <-done:
		require.NotNil(t, r.rep, "%v", r.err)
		require.Len(t, r.rep.Ignored, 1)
		assert.Contains(t, r.rep.Ignored[0], "pipe.state: not a pmvm state file")
	case <-time.After(10 * time.Second):
		t.Fatal("pmvm host restore hung on a FIFO in state_dir")
	}
}
