package guestpm

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// State is the guest's ACPI sleep runstate as pmvm's machine sees it.
type State int

// The runstates. The zero State is Running.
const (
	// Running: the guest runs (S0).
	Running State = iota
	// Suspending: a suspend was requested (guest-suspend-ram sent) and pmvm
	// waits for the guest to write SLP_TYP=S3|SLP_EN to PM1a_CNT.
	Suspending
	// Suspended: the guest wrote the S3 request; its vCPUs are parked and
	// its RAM holds everything (S3). Only now may the machine be saved.
	Suspended
	// Waking: a wake was requested; the BSP is sent to the FACS waking
	// vector and the machine waits for the guest to run again.
	Waking
)

var stateNames = [...]string{Running: "running", Suspending: "suspending", Suspended: "suspended", Waking: "waking"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// ParseState is the inverse of State.String, for state files and flags.
func ParseState(name string) (State, error) {
	for s, n := range stateNames {
		if n == name {
			return State(s), nil
		}
	}
	return 0, fmt.Errorf("unknown guest runstate %q: want running, suspending, suspended or waking", name)
}

// Transition records one change of runstate.
type Transition struct {
	From, To State
	// At is when To was entered.
	At time.Time
	// Took is how long the guest was in From: for Suspending->Suspended, how
	// long the guest took to reach S3 after the request; for
	// Waking->Running, how long the wake took. Zero if the PowerState did
	// not know when From began.
	Took time.Duration
	// Err is why a suspend or wake failed (SuspendFailed, WakeFailed).
	Err error
}

func (t Transition) String() string {
	s := fmt.Sprintf("%s -> %s after %v", t.From, t.To, t.Took)
	if t.Err != nil {
		s += ": " + t.Err.Error()
	}
	return s
}

// ErrIllegalTransition matches (errors.Is) every *TransitionError.
var ErrIllegalTransition = errors.New("illegal guest runstate transition")

// TransitionError refuses an event that the current runstate does not allow.
type TransitionError struct {
	Event string // e.g. "wake request"
	State State  // the runstate that refused it
	// Valid lists the runstates in which Event is allowed.
	Valid []State
}

func (e *TransitionError) Error() string {
	valid := ""
	for i, s := range e.Valid {
		switch {
		case i == 0:
		case i == len(e.Valid)-1:
			valid += " or "
		default:
			valid += ", "
		}
		valid += s.String()
	}
	return fmt.Sprintf("guest runstate: %s refused: the guest is %s (allowed only while %s)", e.Event, e.State, valid)
}

// Is makes errors.Is(err, ErrIllegalTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrIllegalTransition }

// PowerState is the S3 runstate machine, independent of KVM:
//
//	running    --RequestSuspend-->  suspending  (guest-suspend-ram sent)
//	suspending --EnteredS3------->  suspended   (guest wrote SLP_EN with SLP_TYP=S3)
//	running    --EnteredS3------->  suspended   (the guest suspended on its own)
//	suspending --SuspendFailed--->  running     (agent error, or no S3 write in time)
//	suspended  --RequestWake----->  waking
//	waking     --Woke------------>  running
//	waking     --WakeFailed------>  suspended
//
// Every other event is refused with a *TransitionError and changes nothing.
// A guest may suspend itself (echo mem > /sys/power/state) without any
// request, and a SuspendRAM that timed out may still reach the guest later,
// hence EnteredS3 from running. The zero PowerState is running and uses
// time.Now; it is safe for concurrent use (the S3 write arrives on a vCPU
// thread, requests on the control socket).
type PowerState struct {
	mu    sync.Mutex
	now   func() time.Time // nil: time.Now
	state State
	since time.Time // when state was entered; zero if unknown
	last  Transition
}

// NewPowerState starts in initial (Running for a booted guest, Suspended for
// one restored from a state file). now is the clock (nil: time.Now).
func NewPowerState(initial State, now func() time.Time) *PowerState {
	p := &PowerState{now: now, state: initial}
	p.since = p.clock()
	return p
}

func (p *PowerState) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// State returns the current runstate.
func (p *PowerState) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// Since returns when the current runstate was entered (zero if unknown).
func (p *PowerState) Since() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.since
}

// Last returns the most recent transition (the zero Transition if none).
func (p *PowerState) Last() Transition {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// move performs event if the current state is one of from.
func (p *PowerState) move(event string, to State, cause error, from ...State) (Transition, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ok := false
	for _, f := range from {
		if p.state == f {
			ok = true
			break
		}
	}
	if !ok {
		return Transition{}, &TransitionError{Event: event, State: p.state, Valid: from}
	}
	at := p.clock()
	t := Transition{From: p.state, To: to, At: at, Err: cause}
	if !p.since.IsZero() {
		t.Took = at.Sub(p.since)
	}
	p.state, p.since, p.last = to, at, t
	return t, nil
}

// RequestSuspend records that a suspend was requested: running -> suspending.
func (p *PowerState) RequestSuspend() (Transition, error) {
	return p.move("suspend request", Suspending, nil, Running)
}

// EnteredS3 records the guest's S3 write: suspending (or running, for a
// guest that suspended on its own) -> suspended.
func (p *PowerState) EnteredS3() (Transition, error) {
	return p.move("S3 entry", Suspended, nil, Suspending, Running)
}

// SuspendFailed records that a requested suspend did not happen (the agent
// refused, or the S3 write did not come in time): suspending -> running.
func (p *PowerState) SuspendFailed(err error) (Transition, error) {
	return p.move("suspend failure", Running, err, Suspending)
}

// RequestWake records that a wake was requested: suspended -> waking.
func (p *PowerState) RequestWake() (Transition, error) {
	return p.move("wake request", Waking, nil, Suspended)
}

// Woke records that the guest runs again: waking -> running.
func (p *PowerState) Woke() (Transition, error) {
	return p.move("wake completion", Running, nil, Waking)
}

// WakeFailed records that a wake did not happen (e.g. the vCPUs could not
// be started): waking -> suspended, so that it can be retried or the
// machine saved again.
func (p *PowerState) WakeFailed(err error) (Transition, error) {
	return p.move("wake failure", Suspended, err, Waking)
}
