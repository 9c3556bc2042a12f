package guestpm

import (
	"errors"
	"fmt"
	"time"
)

// ErrTimeout matches (errors.Is) every *TimeoutError: the agent did not answer,
// or the line did not take the request, before the call's deadline.
var ErrTimeout = errors.New("guest agent timeout")

// ErrClosed is returned by calls on a Client after Close, and by calls that
// were waiting when Close happened.
var ErrClosed = errors.New("guest agent client closed")

// Error is an error the agent reported: {"error":{"class":...,"desc":...}}.
// Typical classes are "GenericError" (e.g. desc "this feature or command is
// not currently supported") and "CommandNotFound" (an agent built without
// the command, or with it disabled by --block-rpcs).
type Error struct {
	// Command is the request the agent refused, e.g. "guest-suspend-ram";
	// empty when ParseReply made the Error without knowing the request.
	Command string
	Class   string
	Desc    string
}

func (e *Error) Error() string {
	cmd := e.Command
	if cmd == "" {
		cmd = "command"
	}
	return fmt.Sprintf("guest agent refused %s: %s (%s)", cmd, e.Desc, e.Class)
}

// Stages of a call, for TimeoutError.Stage.
const (
	StageQueue = "queue" // another call held the line for the whole budget
	StageSend  = "send"  // the request was not taken by the line in time
	StageReply = "reply" // the request was sent, no answer came in time
)

// TimeoutError says which command timed out, at which stage and after how
// long, and what to check. It matches ErrTimeout and unwraps to the context's
// error (context.DeadlineExceeded).
type TimeoutError struct {
	Command string        // e.g. "guest-sync-delimited", "guest-ping"
	Stage   string        // StageQueue, StageSend or StageReply
	After   time.Duration // the call's whole budget
	Device  string        // the agent's device in the guest, e.g. /dev/ttyS1
	// LastAgentError is the last error reply seen while waiting (e.g. a
	// parse error qga reported for junk on the line), if any, as a clue.
	LastAgentError *Error

	cause error
}

func (e *TimeoutError) Error() string {
	hint := fmt.Sprintf("is qemu-guest-agent running in the guest on %s (qemu-ga -m isa-serial -p %s)?", e.Device, e.Device)
	var s string
	switch e.Stage {
	case StageQueue:
		s = fmt.Sprintf("%s never got the guest agent line within %v: an earlier call held it all along; %s",
			e.Command, e.After, hint)
	case StageSend:
		s = fmt.Sprintf("could not send %s to the guest agent within %v: the line is not draining (guest suspended, or its COM2 UART not being read); %s",
			e.Command, e.After, hint)
	default:
		s = fmt.Sprintf("guest agent did not answer %s within %v: %s", e.Command, e.After, hint)
	}
	if e.LastAgentError != nil {
		s += fmt.Sprintf(" (last agent error seen: %s: %s)", e.LastAgentError.Class, e.LastAgentError.Desc)
	}
	return s
}

// Is makes errors.Is(err, ErrTimeout) true.
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }

// Unwrap returns the context error that ended the wait.
func (e *TimeoutError) Unwrap() error { return e.cause }
