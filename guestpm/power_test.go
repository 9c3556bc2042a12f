package guestpm

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock advances by a fixed step at each reading.
type fakeClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}

var allStates = []State{Running, Suspending, Suspended, Waking}

// powerEvents names every event of PowerState with a function applying it.
var powerEvents = []struct {
	name string
	do   func(p *PowerState) (Transition, error)
}{
	{"RequestSuspend", (*PowerState).RequestSuspend},
	{"EnteredS3", (*PowerState).EnteredS3},
	{"SuspendFailed", func(p *PowerState) (Transition, error) { return p.SuspendFailed(errors.New("no S3 write")) }},
	{"RequestWake", (*PowerState).RequestWake},
	{"Woke", (*PowerState).Woke},
	{"WakeFailed", func(p *PowerState) (Transition, error) { return p.WakeFailed(errors.New("vcpu")) }},
}

// legal is the whole transition table: event -> from -> to. Anything absent
// must be refused.
var legal = map[string]map[State]State{
	"RequestSuspend": {Running: Suspending},
	"EnteredS3":      {Suspending: Suspended, Running: Suspended},
	"SuspendFailed":  {Suspending: Running},
	"RequestWake":    {Suspended: Waking},
	"Woke":           {Waking: Running},
	"WakeFailed":     {Waking: Suspended},
}

// TestPowerStateTable proves, for every event in every state (24 cases),
// that legal transitions reach the right state and record From, To, At and
// Took, and that illegal ones return ErrIllegalTransition and change
// nothing (state, Since, Last).
func TestPowerStateTable(t *testing.T) {
	for _, ev := range powerEvents {
		for _, from := range allStates {
			to, ok := legal[ev.name][from]
			t.Run(fmt.Sprintf("%s/%s", ev.name, from), func(t *testing.T) {
				clk := &fakeClock{t: time.Unix(1000, 0), step: time.Second}
				p := NewPowerState(from, clk.now) // since = 1001
				before := p.Last()
				tr, err := ev.do(p)
				if !ok {
					require.Error(t, err)
					assert.ErrorIs(t, err, ErrIllegalTransition)
					var te *TransitionError
					require.ErrorAs(t, err, &te)
					assert.Equal(t, from, te.State)
					assert.Equal(t, from, p.State())
					assert.Equal(t, time.Unix(1001, 0), p.Since())
					assert.Equal(t, before, p.Last())
					assert.Equal(t, Transition{}, tr)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, to, p.State())
				assert.Equal(t, from, tr.From)
				assert.Equal(t, to, tr.To)
				assert.Equal(t, time.Unix(1002, 0), tr.At)
				assert.Equal(t, time.Second, tr.Took)
				assert.Equal(t, tr.At, p.Since())
				assert.Equal(t, tr, p.Last())
				if ev.name == "SuspendFailed" || ev.name == "WakeFailed" {
					assert.Error(t, tr.Err)
				} else {
					assert.NoError(t, tr.Err)
				}
			})
		}
	}
}

// TestPowerStateCycle proves a full suspend/wake cycle with realistic
// durations, including a failed suspend and a failed wake, and that each
// Took measures the time spent in the state being left.
func TestPowerStateCycle(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	p := NewPowerState(Running, clk.now)
	advance := func(d time.Duration) { clk.mu.Lock(); clk.t = clk.t.Add(d); clk.mu.Unlock() }
	step := func(f func() (Transition, error), want State, took time.Duration) Transition {
		t.Helper()
		tr, err := f()
		require.NoError(t, err)
		assert.Equal(t, want, tr.To)
		assert.Equal(t, took, tr.Took)
		return tr
	}

	advance(time.Hour)
	step(p.RequestSuspend, Suspending, time.Hour)
	advance(3 * time.Second)
	failed := step(func() (Transition, error) { return p.SuspendFailed(errors.New("guest-suspend-ram refused")) }, Running, 3*time.Second)
	assert.EqualError(t, failed.Err, "guest-suspend-ram refused")
	assert.Contains(t, failed.String(), "suspending -> running after 3s: guest-suspend-ram refused")

	advance(time.Minute)
	step(p.RequestSuspend, Suspending, time.Minute)
	advance(700 * time.Millisecond)
	step(p.EnteredS3, Suspended, 700*time.Millisecond)
	advance(90 * time.Second) // kexec and back
	step(p.RequestWake, Waking, 90*time.Second)
	advance(time.Millisecond)
	step(func() (Transition, error) { return p.WakeFailed(errors.New("vcpu")) }, Suspended, time.Millisecond)
	step(p.RequestWake, Waking, 0)
	advance(40 * time.Millisecond)
	step(p.Woke, Running, 40*time.Millisecond)
	assert.Equal(t, Running, p.State())
}

// TestPowerStateGuestInitiatedSuspend proves that a guest suspending on its
// own (no request) is recorded, not refused: the S3 write is a fact.
func TestPowerStateGuestInitiatedSuspend(t *testing.T) {
	p := NewPowerState(Running, nil)
	tr, err := p.EnteredS3()
	require.NoError(t, err)
	assert.Equal(t, Transition{From: Running, To: Suspended, At: tr.At, Took: tr.Took}, tr)
	assert.Equal(t, Suspended, p.State())
}

// TestPowerStateZeroValue proves the zero PowerState is a running guest
// with an unknown start (Took 0 on its first transition) and uses the real
// clock.
func TestPowerStateZeroValue(t *testing.T) {
	var p PowerState
	assert.Equal(t, Running, p.State())
	assert.True(t, p.Since().IsZero())
	assert.Equal(t, Transition{}, p.Last())
	tr, err := p.RequestSuspend()
	require.NoError(t, err)
	assert.Zero(t, tr.Took)
	assert.WithinDuration(t, time.Now(), tr.At, time.Second)
}

// TestTransitionErrorMessage proves the refusal says what was attempted,
// in which state, and when it would be valid.
func TestTransitionErrorMessage(t *testing.T) {
	p := NewPowerState(Running, nil)
	_, err := p.RequestWake()
	assert.EqualError(t, err, "guest runstate: wake request refused: the guest is running (allowed only while suspended)")
	_, err = NewPowerState(Waking, nil).EnteredS3()
	assert.EqualError(t, err, "guest runstate: S3 entry refused: the guest is waking (allowed only while suspending or running)")
}

// TestStateNames proves String and ParseState round-trip (the state file
// stores the name) and that unknown names and values are reported.
func TestStateNames(t *testing.T) {
	for _, s := range allStates {
		got, err := ParseState(s.String())
		require.NoError(t, err)
		assert.Equal(t, s, got)
	}
	assert.Equal(t, []string{"running", "suspending", "suspended", "waking"},
		[]string{Running.String(), Suspending.String(), Suspended.String(), Waking.String()})
	assert.Equal(t, "State(9)", State(9).String())
	assert.Equal(t, "State(-1)", State(-1).String())
	_, err := ParseState("paused")
	assert.ErrorContains(t, err, `unknown guest runstate "paused"`)
}

// TestPowerStateConcurrent proves the model is safe when the S3 write
// (vCPU thread) races with requests (control socket): exactly one of two
// racing RequestSuspend calls wins.
func TestPowerStateConcurrent(t *testing.T) {
	for range 100 {
		p := NewPowerState(Running, nil)
		var wg sync.WaitGroup
		var wins sync.Map
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := p.RequestSuspend(); err == nil {
					wins.Store(i, true)
				}
				_ = p.State()
				_ = p.Last()
			}()
		}
		wg.Wait()
		n := 0
		wins.Range(func(any, any) bool { n++; return true })
		require.Equal(t, 1, n)
	}
}
