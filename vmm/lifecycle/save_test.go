package lifecycle

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/timeline"
)

// fakeMachine plays a *vmm.Machine for the steps that need no KVM: its
// runstate moves as the real one's does for a suspend, a save and a wake.
type fakeMachine struct {
	mu         sync.Mutex
	state      vmm.RunState
	unsaveable error // CheckSaveable's answer
	saveErr    error // SaveState's failure
	wakeErr    error
	suspendErr error // the agent's answer to a suspend

	suspends int
	saved    []string // "path version"
	woken    []string // why
	finished bool
	onFinish func()
}

func (f *fakeMachine) RunState() vmm.RunState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

func (f *fakeMachine) WaitRunState(ctx context.Context, want ...vmm.RunState) (vmm.RunState, error) {
	for {
		st := f.RunState()
		for _, w := range want {
			if st == w {
				return st, nil
			}
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func (f *fakeMachine) CheckSaveable(string) error { return f.unsaveable }

func (f *fakeMachine) WakeOnSuspend(bool, string) {}

func (f *fakeMachine) SaveState(path, version string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != vmm.StateSuspended {
		return errors.New("the guest is " + string(f.state) + ": only a suspended guest can be saved")
	}
	if f.saveErr != nil {
		return f.saveErr
	}
	f.saved = append(f.saved, path+" "+version)
	f.state = vmm.StateSaved
	return nil
}

func (f *fakeMachine) Wake(why string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.woken = append(f.woken, why)
	if f.wakeErr != nil {
		return f.wakeErr
	}
	f.state = vmm.StateRunning
	return nil
}

func (f *fakeMachine) Status() vmm.Status {
	return vmm.Status{Name: "fake", RunState: f.RunState()}
}

func (f *fakeMachine) Finish() {
	f.mu.Lock()
	f.finished = true
	done := f.onFinish
	f.mu.Unlock()
	if done != nil {
		done()
	}
}

// suspend plays Suspend: the guest agent suspends the guest, or refuses.
func (f *fakeMachine) suspend(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.suspends++
	if f.suspendErr != nil {
		return f.suspendErr
	}
	f.state = vmm.StateSuspended
	return nil
}

func steps(tl *timeline.Timeline) []string {
	var out []string
	for _, e := range tl.Sorted() {
		out = append(out, e.What)
	}
	return out
}

// TestSave proves each path through a save: what refuses it touches
// nothing; a running guest is suspended first, a suspended one is not;
// each step lands in the timeline under lifecycle's names; a save that
// suspended the guest and failed wakes it again (and says so, or says
// that waking failed too), one that found it suspended leaves it so.
func TestSave(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.state")
	for _, tc := range []struct {
		proves    string
		m         *fakeMachine
		path      string
		wantErr   string
		wantSteps []string
		suspends  int
		saved     bool
		woken     []string
		endState  vmm.RunState
	}{
		{proves: "a running guest is suspended, then saved", m: &fakeMachine{state: vmm.StateRunning}, path: path,
			wantSteps: []string{StepSaveRequested, StepGuestInS3, StepStateDurable}, suspends: 1, saved: true, endState: vmm.StateSaved},
		{proves: "a suspended guest is saved as it is", m: &fakeMachine{state: vmm.StateSuspended}, path: path,
			wantSteps: []string{StepSaveRequested, StepStateDurable}, saved: true, endState: vmm.StateSaved},
		{proves: "no path: refused before anything", m: &fakeMachine{state: vmm.StateRunning}, path: "",
			wantErr: "save needs a state file path", endState: vmm.StateRunning},
		{proves: "a relative path: refused before anything", m: &fakeMachine{state: vmm.StateRunning}, path: "vm1.state",
			wantErr: "must be absolute", endState: vmm.StateRunning},
		{proves: "an unsaveable VM: refused before the guest is suspended", m: &fakeMachine{state: vmm.StateRunning, unsaveable: errors.New("mode restart")}, path: path,
			wantErr: "mode restart", endState: vmm.StateRunning},
		{proves: "the agent refuses: the guest keeps running, nothing is written", m: &fakeMachine{state: vmm.StateRunning, suspendErr: errors.New("no agent")}, path: path,
			wantErr: "no agent", wantSteps: []string{StepSaveRequested}, suspends: 1, endState: vmm.StateRunning},
		{proves: "the write fails after this save suspended the guest: it is woken again", m: &fakeMachine{state: vmm.StateRunning, saveErr: errors.New("disk full")}, path: path,
			wantErr: "disk full; the guest was woken again", wantSteps: []string{StepSaveRequested, StepGuestInS3}, suspends: 1, woken: []string{"save failed"}, endState: vmm.StateRunning},
		{proves: "the write fails and so does the wake: the operator is told what to do", m: &fakeMachine{state: vmm.StateRunning, saveErr: errors.New("disk full"), wakeErr: errors.New("no vector")}, path: path,
			wantErr: "disk full; waking the guest again failed too (no vector): pmvm wakeup it", wantSteps: []string{StepSaveRequested, StepGuestInS3}, suspends: 1, woken: []string{"save failed"}, endState: vmm.StateSuspended},
		{proves: "the write fails for a guest found suspended: it stays suspended", m: &fakeMachine{state: vmm.StateSuspended, saveErr: errors.New("disk full")}, path: path,
			wantErr: "disk full", wantSteps: []string{StepSaveRequested}, endState: vmm.StateSuspended},
	} {
		t.Run(tc.proves, func(t *testing.T) {
			m := tc.m
			tl, err := Save(context.Background(), m, m.suspend, tc.path, "v-test", zerolog.Nop())
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				if m.saveErr == nil {
					assert.NotContains(t, err.Error(), "woken", "nothing to wake")
				}
			} else {
				require.NoError(t, err)
			}
			if tc.wantSteps == nil {
				assert.Nil(t, tl, "nothing was done, no timeline")
			} else {
				require.NotNil(t, tl)
				assert.Equal(t, "save", tl.Name)
				assert.Equal(t, tc.wantSteps, steps(tl))
			}
			assert.Equal(t, tc.suspends, m.suspends, "suspends")
			if tc.saved {
				assert.Equal(t, []string{tc.path + " v-test"}, m.saved)
			} else {
				assert.Empty(t, m.saved)
			}
			assert.Equal(t, tc.woken, m.woken)
			assert.Equal(t, tc.endState, m.RunState())
			assert.False(t, m.finished, "Save leaves ending the machine to its caller")
		})
	}
}

// serve serves the lifecycle control commands for m on a socket in a
// test directory, as Run does; a finished m stops serving, as pmvm exits
// once its save is answered. extra adds or replaces commands.
func serve(t *testing.T, m *fakeMachine, extra map[string]vmm.CommandFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	cmds := commands(m, m.suspend, "v-test", zerolog.Nop())
	for name, f := range extra {
		cmds[name] = f
	}
	srv, err := vmm.ServeControl(sock, nil, zerolog.Nop(), cmds)
	require.NoError(t, err)
	var once sync.Once
	stop := func() { once.Do(func() { srv.Close() }) }
	m.onFinish = stop
	t.Cleanup(stop)
	return sock
}

// TestRequestSaveOverTheControlSocket proves a save asked over the control
// socket, as pmvm save and a host update ask it: the serving side
// suspends and saves, answers with its timeline in the one timeline type,
// then ends its machine; the asking side gets that timeline and records
// the pmvm's exit in it. A failed save answers with its error and the
// timeline as far as it got, and the pmvm stays.
func TestRequestSaveOverTheControlSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm1.state")

	m := &fakeMachine{state: vmm.StateRunning}
	sock := serve(t, m, nil)
	tl, err := RequestSave(sock, path, 5*time.Second)
	require.NoError(t, err)
	require.NotNil(t, tl)
	assert.Equal(t, []string{StepSaveRequested, StepGuestInS3, StepStateDurable}, steps(tl))
	assert.Equal(t, []string{path + " v-test"}, m.saved)
	require.Equal(t, PMVMExited, WaitExited(sock, 5*time.Second, tl, "vm1"), "the saved pmvm stops serving")
	ev := tl.Sorted()
	assert.Equal(t, timeline.Event{At: ev[len(ev)-1].At, VM: "vm1", What: StepPMVMExited}, ev[len(ev)-1])
	m.mu.Lock()
	finished := m.finished
	m.mu.Unlock()
	assert.True(t, finished)

	failing := &fakeMachine{state: vmm.StateRunning, saveErr: errors.New("disk full")}
	sock = serve(t, failing, nil)
	tl, err = RequestSave(sock, path, 5*time.Second)
	require.Error(t, err)
	assert.Equal(t, "disk full; the guest was woken again", err.Error())
	require.NotNil(t, tl, "a failed save still reports how far it got")
	assert.Equal(t, []string{StepSaveRequested, StepGuestInS3}, steps(tl))
	assert.Equal(t, PMVMRunning, WaitExited(sock, 50*time.Millisecond, tl, "vm1"), "pmvm goes on after a failed save")
	assert.NotContains(t, steps(tl), StepPMVMExited)
	assert.False(t, failing.finished)
	assert.Equal(t, vmm.StateRunning, failing.RunState())

	_, err = RequestSave(filepath.Join(t.TempDir(), "none.sock"), path, time.Second)
	assert.ErrorContains(t, err, "is the VM running?")
}

// TestRequestSuspendAndWake proves the suspend and wakeup requests of pmvm
// suspend, pmvm wakeup and a host update's rollback: success returns how
// long the serving side took, a refusal returns its message.
func TestRequestSuspendAndWake(t *testing.T) {
	m := &fakeMachine{state: vmm.StateRunning}
	sock := serve(t, m, map[string]vmm.CommandFunc{
		// vmm's own wakeup needs a real machine: this one plays it.
		"wakeup": func(context.Context, vmm.ControlRequest) vmm.ControlResponse {
			if err := m.Wake("operator"); err != nil {
				return vmm.ControlResponse{Error: err.Error()}
			}
			return vmm.ControlResponse{OK: true}
		},
	})
	took, err := RequestSuspend(sock, 5*time.Second)
	require.NoError(t, err)
	assert.Positive(t, took)
	assert.Equal(t, vmm.StateSuspended, m.RunState())
	_, err = RequestWake(sock, 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, vmm.StateRunning, m.RunState())
	assert.Equal(t, []string{"operator"}, m.woken)

	m.mu.Lock()
	m.suspendErr = errors.New("guest agent: no answer; the guest keeps running")
	m.wakeErr = errors.New("not suspended")
	m.mu.Unlock()
	_, err = RequestSuspend(sock, 5*time.Second)
	assert.EqualError(t, err, "guest agent: no answer; the guest keeps running")
	_, err = RequestWake(sock, 5*time.Second)
	assert.EqualError(t, err, "not suspended")
}
