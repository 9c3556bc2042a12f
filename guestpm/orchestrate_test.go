package guestpm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeMachine plays the VMM side of Suspend: it is "running" until enterS3
// (the guest's S3 write to PM1a_CNT), then "suspended".
type fakeMachine struct {
	mu    sync.Mutex
	state string
	s3    chan struct{}
	once  sync.Once
	waits int
	// wakeOnS3 records WakeOnSuspend's calls: "" for false, why for true.
	wakeOnS3 []string
}

func (m *fakeMachine) WakeOnSuspend(wake bool, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !wake {
		why = ""
	}
	m.wakeOnS3 = append(m.wakeOnS3, why)
}

func (m *fakeMachine) wakeOnSuspendCalls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.wakeOnS3...)
}

func newFakeMachine() *fakeMachine { return &fakeMachine{state: "running", s3: make(chan struct{})} }

func (m *fakeMachine) RunState() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

func (m *fakeMachine) WaitSuspended(ctx context.Context) error {
	m.mu.Lock()
	m.waits++
	m.mu.Unlock()
	select {
	case <-m.s3:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *fakeMachine) enterS3() {
	m.once.Do(func() {
		m.mu.Lock()
		m.state = "suspended"
		m.mu.Unlock()
		close(m.s3)
	})
}

// fakeLine hands out one fresh fakeAgent connection per Borrow, after
// failing the first failBorrows Borrows.
type fakeLine struct {
	t           *testing.T
	cfg         agentConfig
	failBorrows int

	mu       sync.Mutex
	borrows  int
	releases int
	agents   []*fakeAgent
}

func (l *fakeLine) Borrow(ctx context.Context) (io.ReadWriteCloser, func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.borrows++
	if l.borrows <= l.failBorrows {
		return nil, nil, errors.New("agent line busy")
	}
	host, guest := net.Pipe()
	a := newFakeAgent(guest, l.cfg)
	l.agents = append(l.agents, a)
	l.t.Cleanup(func() {
		host.Close()
		guest.Close()
		<-a.done
	})
	var once sync.Once
	release := func() {
		once.Do(func() {
			l.mu.Lock()
			l.releases++
			l.mu.Unlock()
		})
	}
	return host, release, nil
}

func (l *fakeLine) counts() (borrows, releases int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.borrows, l.releases
}

func (l *fakeLine) agent(i int) *fakeAgent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.agents[i]
}

func testLog(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
}

// TestSuspendFailsWhenGuestNeverReachesS3 proves that when the agent takes
// guest-suspend-ram (qga answers nothing) but the guest never writes S3,
// Suspend returns within its context's deadline, whether the deadline falls
// inside or after the agent's reply grace, with an error saying the guest did
// not reach S3 after guest-suspend-ram and that the machine is still
// running; it sent the request once, gave the line back, and left the
// machine running (Suspend never forces a state).
func TestSuspendFailsWhenGuestNeverReachesS3(t *testing.T) {
	for name, budget := range map[string]time.Duration{
		"deadline after the grace":  DefaultSuspendGrace + time.Second,
		"deadline within the grace": DefaultSuspendGrace / 2,
	} {
		t.Run(name, func(t *testing.T) {
			m := newFakeMachine()
			line := &fakeLine{t: t}
			ctx := ctxTimeout(t, budget)
			start := time.Now()
			took, err := Suspend(ctx, m, line, testLog(t))
			elapsed := time.Since(start)

			require.Error(t, err)
			assert.Zero(t, took)
			assert.Contains(t, err.Error(), "did not reach S3")
			assert.Contains(t, err.Error(), "after guest-suspend-ram")
			assert.Contains(t, err.Error(), "machine is running")
			assert.GreaterOrEqual(t, elapsed, budget-50*time.Millisecond, "waited for the guest until the deadline")
			assert.Less(t, elapsed, budget+time.Second, "returned at the deadline")

			assert.Equal(t, "running", m.RunState(), "the machine is left running, not suspended or stopped")
			assert.Equal(t, 1, line.agent(0).count("guest-suspend-ram"))
			b, r := line.counts()
			assert.Equal(t, 1, b)
			assert.Equal(t, 1, r, "the line is given back")
			calls := m.wakeOnSuspendCalls()
			require.Len(t, calls, 2, "a late S3 is first kept (the request goes out), then woken (the suspend is given up on)")
			assert.Empty(t, calls[0])
			assert.Contains(t, calls[1], "did not reach S3", "the machine is told why it must wake a late S3")
		})
	}
}

// TestSuspendAgentRefuses proves that an agent's error reply to
// guest-suspend-ram fails Suspend at once with the agent's error and a note
// that the guest keeps running, without waiting for the deadline.
func TestSuspendAgentRefuses(t *testing.T) {
	m := newFakeMachine()
	line := &fakeLine{t: t, cfg: agentConfig{SuspendErr: &Error{Class: "GenericError", Desc: "this feature or command is not currently supported"}}}
	start := time.Now()
	_, err := Suspend(ctxTimeout(t, 10*time.Second), m, line, testLog(t))
	var ae *Error
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "guest-suspend-ram", ae.Command)
	assert.Contains(t, err.Error(), "the guest keeps running")
	assert.Less(t, time.Since(start), 2*time.Second)
	assert.Equal(t, "running", m.RunState())
	_, r := line.counts()
	assert.Equal(t, 1, r, "the line is given back")
}

// TestSuspendRefusesWhenNotRunning proves Suspend sends nothing and does not
// touch the line when the machine is not running.
func TestSuspendRefusesWhenNotRunning(t *testing.T) {
	m := newFakeMachine()
	m.enterS3()
	line := &fakeLine{t: t}
	_, err := Suspend(ctxTimeout(t, time.Second), m, line, testLog(t))
	require.ErrorContains(t, err, "the guest is suspended, not running")
	b, _ := line.counts()
	assert.Zero(t, b)
}

// TestSuspendReachesS3 proves the happy path: the agent syncs, takes
// guest-suspend-ram and the guest then writes S3 (the fake machine turns
// "suspended"); Suspend returns nil and the time it took, having sent the
// request once after a sync and given the line back. When S3 comes at once,
// Suspend returns as soon as the machine reports it, without sitting out the
// agent's error-reply grace; when S3 comes after the grace, it still
// succeeds.
func TestSuspendReachesS3(t *testing.T) {
	for name, s3After := range map[string]time.Duration{
		"S3 at once":         0,
		"S3 after the grace": DefaultSuspendGrace + 300*time.Millisecond,
	} {
		t.Run(name, func(t *testing.T) {
			m := newFakeMachine()
			line := &fakeLine{t: t}
			line.cfg.Hook = func(a *fakeAgent, n int, req agentRequest) bool {
				if req.Execute == "guest-suspend-ram" {
					time.AfterFunc(s3After, m.enterS3)
				}
				return false // then answer as qga does: nothing
			}
			start := time.Now()
			took, err := Suspend(ctxTimeout(t, 5*time.Second), m, line, testLog(t))
			elapsed := time.Since(start)
			require.NoError(t, err)
			assert.Equal(t, "suspended", m.RunState())
			assert.Positive(t, took)
			assert.LessOrEqual(t, took, elapsed)
			if s3After == 0 {
				assert.Less(t, elapsed, DefaultSuspendGrace, "returns once the machine is in S3, not after the grace")
			} else {
				assert.GreaterOrEqual(t, elapsed, s3After)
				assert.Less(t, elapsed, s3After+time.Second)
			}

			reqs := line.agent(0).requests()
			require.NotEmpty(t, reqs)
			assert.Equal(t, "guest-sync-delimited", reqs[0].Execute, "synced first")
			assert.Equal(t, 1, line.agent(0).count("guest-suspend-ram"))
			assert.Equal(t, "guest-suspend-ram", reqs[len(reqs)-1].Execute)
			b, r := line.counts()
			assert.Equal(t, 1, b)
			assert.Equal(t, 1, r, "the line is given back")
			assert.Equal(t, []string{""}, m.wakeOnSuspendCalls(), "a suspend that succeeds keeps the guest in S3")
		})
	}
}

// TestSetTimeAfterWakeSendsNowAfterSync proves SetTimeAfterWake syncs with
// the agent first and only then reads the host clock: the guest-set-time it
// sends carries a time no earlier than the agent's (slow, 300 ms) sync
// answer and no later than the call's return, and the line is given back.
func TestSetTimeAfterWakeSendsNowAfterSync(t *testing.T) {
	var mu sync.Mutex
	var syncAnswered time.Time
	line := &fakeLine{t: t}
	line.cfg.Hook = func(a *fakeAgent, n int, req agentRequest) bool {
		if req.Execute == "guest-sync-delimited" {
			time.Sleep(300 * time.Millisecond)
			mu.Lock()
			syncAnswered = time.Now()
			mu.Unlock()
		}
		return false // the default handler answers
	}
	start := time.Now()
	require.NoError(t, SetTimeAfterWake(ctxTimeout(t, 5*time.Second), line, testLog(t)))
	end := time.Now()

	a := line.agent(0)
	reqs := a.requests()
	require.NotEmpty(t, reqs)
	assert.Equal(t, "guest-sync-delimited", reqs[0].Execute)
	assert.Equal(t, "guest-set-time", reqs[len(reqs)-1].Execute)
	assert.Equal(t, 1, a.count("guest-set-time"))

	a.mu.Lock()
	require.Len(t, a.setTimes, 1)
	var args struct {
		Time *int64 `json:"time"`
	}
	require.NoError(t, json.Unmarshal(a.setTimes[0], &args))
	a.mu.Unlock()
	require.NotNil(t, args.Time, "guest-set-time carries a time (not the set-from-RTC form)")
	sent := time.Unix(0, *args.Time)
	mu.Lock()
	defer mu.Unlock()
	require.False(t, syncAnswered.IsZero())
	assert.False(t, sent.Before(syncAnswered), "time read after the sync answer (sent %v, sync answered %v)", sent, syncAnswered)
	assert.False(t, sent.After(end), "time is not in the future")
	assert.WithinDuration(t, end, sent, time.Second, "close to now")
	assert.GreaterOrEqual(t, sent.Sub(start), 300*time.Millisecond, "not the time the call started")
	b, r := line.counts()
	assert.Equal(t, 1, b)
	assert.Equal(t, 1, r)
}

// TestSetTimeAfterWakeRetries proves SetTimeAfterWake keeps trying while the
// line is unavailable (the agent is still waking) and succeeds on the first
// Borrow that works.
func TestSetTimeAfterWakeRetries(t *testing.T) {
	line := &fakeLine{t: t, failBorrows: 2}
	require.NoError(t, SetTimeAfterWake(ctxTimeout(t, 5*time.Second), line, testLog(t)))
	b, r := line.counts()
	assert.Equal(t, 3, b)
	assert.Equal(t, 1, r)
	assert.Equal(t, 1, line.agent(0).count("guest-set-time"))
}

// TestSetTimeAfterWakeGivesUp proves SetTimeAfterWake returns an error
// saying the clock could not be set once its context ends with the agent
// silent, releasing every line it borrowed.
func TestSetTimeAfterWakeGivesUp(t *testing.T) {
	line := &fakeLine{t: t, cfg: agentConfig{Silent: true}}
	start := time.Now()
	err := SetTimeAfterWake(ctxTimeout(t, 700*time.Millisecond), line, testLog(t))
	require.ErrorContains(t, err, "could not set the guest clock after wake")
	assert.Less(t, time.Since(start), 2*time.Second)
	b, r := line.counts()
	assert.Positive(t, b)
	assert.Equal(t, b, r)
}
