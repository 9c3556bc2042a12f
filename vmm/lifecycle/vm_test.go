package lifecycle

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/timeline"
)

// fakeRunner is a restored machine for Start: Run parks until Stop, Wake
// records whether the state file was still resumable at that moment.
type fakeRunner struct {
	statePath string
	wakeErr   error

	mu          sync.Mutex
	ran, woke   bool
	stateAtWake bool // the state file still existed under its name when the vCPUs were woken
	// spentAfterMoveBeforeWake: SpendState came after the move-aside and
	// before the wake; unspent: UnspendState was called.
	spentAfterMoveBeforeWake, unspent bool
	stopped                           chan struct{}
	stopOnce                          sync.Once
}

func newFakeRunner(statePath string) *fakeRunner {
	return &fakeRunner{statePath: statePath, stopped: make(chan struct{})}
}

func (f *fakeRunner) Run(ctx context.Context) (vmm.Outcome, error) {
	f.mu.Lock()
	f.ran = true
	f.mu.Unlock()
	select {
	case <-f.stopped:
	case <-ctx.Done():
	}
	return vmm.OutcomeStopped, nil
}

func (f *fakeRunner) Wake(string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.woke = true
	_, err := os.Lstat(f.statePath)
	f.stateAtWake = err == nil
	return f.wakeErr
}

func (f *fakeRunner) Stop() { f.stopOnce.Do(func() { close(f.stopped) }) }

// SpendState records whether the state file was already moved aside and
// the vCPUs not yet woken: the state is spent on the memory last.
func (f *fakeRunner) SpendState() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := os.Lstat(f.statePath)
	f.spentAfterMoveBeforeWake = err != nil && !f.woke
	return nil
}

func (f *fakeRunner) UnspendState() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unspent = true
	return nil
}

func resumeAt(path string) *Resume {
	return &Resume{Path: path, Timeline: timeline.New("resume")}
}

// TestStartSpendsTheStateBeforeTheWake proves that a resume's state file
// is moved aside (durably) before the guest's vCPUs are woken, so that a
// crash right after the wake cannot leave a resumable stale state; that a
// state file that cannot be moved aside refuses the resume before any
// vCPU runs, leaving it in place; and that a wake that fails (the guest
// did not run) puts the state file and the memory's generation back for a
// retry.
func TestStartSpendsTheStateBeforeTheWake(t *testing.T) {
	dir := t.TempDir()

	// The resume: spent before the wake.
	p := filepath.Join(dir, "vm1.state")
	require.NoError(t, os.WriteFile(p, []byte("state"), 0o600))
	f := newFakeRunner(p)
	v := &VM{m: f, resume: resumeAt(p)}
	require.NoError(t, v.Start(context.Background()))
	assert.True(t, f.woke)
	assert.False(t, f.stateAtWake, "the state file was moved aside before the vCPUs were woken")
	assert.True(t, f.spentAfterMoveBeforeWake, "the memory's generation advanced after the move-aside and before the wake (a pmvm killed before it leaves the state resumable)")
	assert.False(t, f.unspent)
	assert.NoFileExists(t, p)
	moved := state.LastResumed(p)
	require.NotEmpty(t, moved)
	assert.Equal(t, moved, v.resume.SpentTo)
	v.Stop()
	_, err := v.Wait()
	require.NoError(t, err)

	// A state file that cannot be moved aside (its resumed name is too
	// long for the file system): refused, no vCPU woken, file in place.
	long := filepath.Join(dir, strings.Repeat("x", 240)+".state")
	require.NoError(t, os.WriteFile(long, []byte("state"), 0o600))
	f = newFakeRunner(long)
	v = &VM{m: f, resume: resumeAt(long)}
	err = v.Start(context.Background())
	require.Error(t, err)
	assert.False(t, f.woke, "never woken")
	assert.FileExists(t, long, "left in place: the guest can still be resumed from it")
	assert.Contains(t, err.Error(), "guest memory was not touched")
	assert.Contains(t, err.Error(), "was not woken")
	_, werr := v.Wait()
	assert.Error(t, werr, "Wait returns at once with the refusal")

	// A wake that fails: the guest did not run, so the state is put back.
	p2 := filepath.Join(dir, "vm2.state")
	require.NoError(t, os.WriteFile(p2, []byte("state"), 0o600))
	f = newFakeRunner(p2)
	f.wakeErr = errors.New("cannot wake: only 0 of 1 vCPUs left the guest")
	v = &VM{m: f, resume: resumeAt(p2)}
	err = v.Start(context.Background())
	require.Error(t, err)
	assert.False(t, f.stateAtWake, "spent before the wake")
	assert.FileExists(t, p2, "put back after the failed wake, for a retry")
	assert.True(t, f.unspent, "the memory's generation is put back too, or the retry would be refused")
	assert.Contains(t, err.Error(), "put back")
}
