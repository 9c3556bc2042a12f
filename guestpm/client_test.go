package guestpm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestFirstCallSyncsWithSentinel proves that the first command on a
// connection is preceded by 0xFF and guest-sync-delimited with an id, that
// later commands reuse the sync, and that Ping succeeds on qga's {} answer.
func TestFirstCallSyncsWithSentinel(t *testing.T) {
	c, a := startAgent(t, agentConfig{}, testOptions(t))
	ctx := ctxTimeout(t, 2*time.Second)
	require.NoError(t, c.Ping(ctx))
	require.NoError(t, c.Ping(ctx))

	reqs := a.requests()
	require.Len(t, reqs, 3)
	assert.Equal(t, "guest-sync-delimited", reqs[0].Execute)
	var args struct {
		ID int64 `json:"id"`
	}
	require.NoError(t, json.Unmarshal(reqs[0].Arguments, &args))
	assert.Positive(t, args.ID)
	assert.Equal(t, "guest-ping", reqs[1].Execute)
	assert.Equal(t, "guest-ping", reqs[2].Execute)

	a.mu.Lock()
	raw := append([]byte(nil), a.raw...)
	a.mu.Unlock()
	require.NotEmpty(t, raw)
	assert.Equal(t, byte(0xFF), raw[0], "the sync must start with the 0xFF flush")
	assert.Contains(t, string(raw), `{"execute":"guest-ping"}`+"\n")
}

// TestSyncExplicit proves Sync can be called on its own, and that each Sync
// uses a fresh id.
func TestSyncExplicit(t *testing.T) {
	c, a := startAgent(t, agentConfig{}, testOptions(t))
	ctx := ctxTimeout(t, 2*time.Second)
	require.NoError(t, c.Sync(ctx))
	require.NoError(t, c.Sync(ctx))
	reqs := a.requests()
	require.Len(t, reqs, 2)
	assert.NotEqual(t, string(reqs[0].Arguments), string(reqs[1].Arguments))
}

// TestInfo proves guest-info is decoded (version, commands, enabled,
// success-response) and that Supports honours "enabled".
func TestInfo(t *testing.T) {
	c, _ := startAgent(t, agentConfig{}, testOptions(t))
	info, err := c.Info(ctxTimeout(t, 2*time.Second))
	require.NoError(t, err)
	assert.Equal(t, "8.2.2", info.Version)
	require.Len(t, info.Commands, 3)
	assert.Equal(t, CommandInfo{Name: "guest-suspend-ram", Enabled: true, SuccessResponse: false}, info.Commands[0])
	assert.True(t, info.Supports("guest-suspend-ram"))
	assert.False(t, info.Supports("guest-exec"), "disabled commands are not supported")
	assert.False(t, info.Supports("guest-suspend-hybrid"), "absent commands are not supported")
}

// TestSetAndGetTime proves SetTime sends "time" as nanoseconds since the
// epoch, GetTime turns the answer back into the same instant, and the zero
// time sends guest-set-time without arguments (guest reads its RTC).
func TestSetAndGetTime(t *testing.T) {
	c, a := startAgent(t, agentConfig{}, testOptions(t))
	ctx := ctxTimeout(t, 2*time.Second)

	got, err := c.GetTime(ctx)
	require.NoError(t, err)
	assert.Equal(t, fakeTime, got.UnixNano())

	want := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC)
	require.NoError(t, c.SetTime(ctx, want))
	got, err = c.GetTime(ctx)
	require.NoError(t, err)
	assert.True(t, want.Equal(got), "got %v want %v", got, want)

	require.NoError(t, c.SetTime(ctx, time.Time{}))
	a.mu.Lock()
	sets := append([]json.RawMessage(nil), a.setTimes...)
	a.mu.Unlock()
	require.Len(t, sets, 2)
	assert.JSONEq(t, fmt.Sprintf(`{"time":%d}`, want.UnixNano()), string(sets[0]))
	assert.Empty(t, sets[1], "zero time: no arguments")

	assert.Error(t, c.SetTime(ctx, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)), "beyond int64 ns")
}

// TestSyncIgnoresStaleSyncReply proves that a 0xFF-prefixed answer carrying
// an earlier sync's id is ignored and the answer with the right id is taken.
func TestSyncIgnoresStaleSyncReply(t *testing.T) {
	c, a := startAgent(t, agentConfig{StaleSyncFirst: true}, testOptions(t))
	got, err := c.GetTime(ctxTimeout(t, 2*time.Second))
	require.NoError(t, err)
	assert.Equal(t, fakeTime, got.UnixNano())
	assert.Equal(t, 1, a.count("guest-sync-delimited"), "no resend was needed")
}

// TestSyncSkipsJunkBeforeSentinel proves that garbage on the line before
// the agent's 0xFF (binary noise, a half reply, a complete but foreign
// reply, an over-long unterminated object) never becomes an answer.
func TestSyncSkipsJunkBeforeSentinel(t *testing.T) {
	junk := []byte("\x00\x01 login: \r\n{\"return\": {\"vers" + `{"return": 4242}` + "\n{\"return\":" +
		"{\"a\":\"" + strings.Repeat("x", 3*DefaultMaxMessage))
	c, _ := startAgent(t, agentConfig{SyncJunk: junk}, testOptions(t))
	got, err := c.GetTime(ctxTimeout(t, 2*time.Second))
	require.NoError(t, err)
	assert.Equal(t, fakeTime, got.UnixNano())
}

// TestBootJunkIgnored proves that unsolicited bytes on the line before any
// request (boot messages, a previous client's leftovers) are dropped.
func TestBootJunkIgnored(t *testing.T) {
	boot := []byte("[    0.000000] Linux version 6.x\r\n{\"return\": 1}\n\xfe\xfd{\"error\": {\"class\":\"x\",\"desc\":\"y\"}}\n")
	c, _ := startAgent(t, agentConfig{BootJunk: boot}, testOptions(t))
	require.NoError(t, c.Ping(ctxTimeout(t, 2*time.Second)))
}

// TestSyncIgnoresFlushErrorReply proves that an error reply the agent sends
// for the flushed bytes (qga may report the 0xFF as a JSON parse error) is
// not taken as the answer to the sync or to the command.
func TestSyncIgnoresFlushErrorReply(t *testing.T) {
	c, _ := startAgent(t, agentConfig{FlushError: true}, testOptions(t))
	require.NoError(t, c.Ping(ctxTimeout(t, 2*time.Second)))
}

// TestSyncResendsAfterLostAnswer proves that when the answer to a sync is
// lost on the line, Sync sends a new request with a new id after
// SyncRetry, within the same call, and succeeds.
func TestSyncResendsAfterLostAnswer(t *testing.T) {
	opts := testOptions(t)
	opts.SyncRetry = 50 * time.Millisecond
	c, a := startAgent(t, agentConfig{LoseSyncs: 2}, opts)
	require.NoError(t, c.Ping(ctxTimeout(t, 2*time.Second)))
	reqs := a.requests()
	require.Len(t, reqs, 4)
	for i := 0; i < 3; i++ {
		assert.Equal(t, "guest-sync-delimited", reqs[i].Execute)
	}
	assert.NotEqual(t, string(reqs[0].Arguments), string(reqs[2].Arguments))
	assert.Equal(t, "guest-ping", reqs[3].Execute)
}

// TestTimeoutSilentAgent proves that an agent that reads but never answers
// makes the call fail at the context deadline (well under a second here)
// with ErrTimeout, a context.DeadlineExceeded cause, and a message saying
// what to check.
func TestTimeoutSilentAgent(t *testing.T) {
	opts := testOptions(t)
	opts.SyncRetry = 40 * time.Millisecond
	c, a := startAgent(t, agentConfig{Silent: true}, opts)
	start := time.Now()
	err := c.Ping(ctxTimeout(t, 150*time.Millisecond))
	elapsed := time.Since(start)
	require.Error(t, err)
	assert.Less(t, elapsed, time.Second)
	assert.GreaterOrEqual(t, elapsed, 140*time.Millisecond)
	assert.ErrorIs(t, err, ErrTimeout)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "guest-sync-delimited", te.Command)
	assert.Equal(t, StageReply, te.Stage)
	assert.Contains(t, err.Error(), "did not answer guest-sync-delimited within")
	assert.Contains(t, err.Error(), "is qemu-guest-agent running in the guest on /dev/ttyS1 (qemu-ga -m isa-serial -p /dev/ttyS1)?")
	assert.Greater(t, a.count("guest-sync-delimited"), 1, "syncs were resent while waiting")
	assert.Zero(t, a.count("guest-ping"), "no command is sent on an unsynced line")
}

// TestDefaultTimeoutWithoutDeadline proves that a context without deadline
// still gets one (Options.Timeout) and the error names that duration.
func TestDefaultTimeoutWithoutDeadline(t *testing.T) {
	opts := testOptions(t)
	opts.Timeout = 120 * time.Millisecond
	c, _ := startAgent(t, agentConfig{Silent: true}, opts)
	start := time.Now()
	err := c.Ping(context.Background())
	assert.Less(t, time.Since(start), time.Second)
	assert.ErrorIs(t, err, ErrTimeout)
	assert.Contains(t, err.Error(), "within 120ms")
}

// TestDefaultTimeoutIsFiveSeconds proves the documented default.
func TestDefaultTimeoutIsFiveSeconds(t *testing.T) {
	host, guest := net.Pipe()
	defer guest.Close()
	c := New(host, Options{})
	defer c.Close()
	assert.Equal(t, 5*time.Second, c.opts.Timeout)
	assert.Equal(t, 500*time.Millisecond, c.opts.SuspendGrace)
	assert.Equal(t, "/dev/ttyS1", c.opts.GuestDevice)
}

// TestTimeoutLineNotDraining proves that a line nobody reads (the guest's
// UART is not drained) cannot block a call past its deadline: the write is
// abandoned and the error says the request could not be sent.
func TestTimeoutLineNotDraining(t *testing.T) {
	c, _ := startAgent(t, agentConfig{NoRead: true}, testOptions(t))
	start := time.Now()
	err := c.Ping(ctxTimeout(t, 100*time.Millisecond))
	assert.Less(t, time.Since(start), time.Second)
	assert.ErrorIs(t, err, ErrTimeout)
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, StageSend, te.Stage)
	assert.Contains(t, err.Error(), "not draining")
}

// TestSlowAgentWithinDeadline proves that an agent slower than the retry
// interval but within the deadline is waited for.
func TestSlowAgentWithinDeadline(t *testing.T) {
	opts := testOptions(t)
	c, a := startAgent(t, agentConfig{Delay: 150 * time.Millisecond}, opts)
	info, err := c.Info(ctxTimeout(t, 2*time.Second))
	require.NoError(t, err)
	assert.Equal(t, "8.2.2", info.Version)
	assert.Equal(t, 1, a.count("guest-sync-delimited"))
}

// TestLateReplyNotMistaken proves that after a call timed out, its late
// answer is not taken as the answer to the next call: the next call resyncs
// and ignores it.
func TestLateReplyNotMistaken(t *testing.T) {
	cfg := agentConfig{Hook: func(a *fakeAgent, n int, req agentRequest) bool {
		if req.Execute != "guest-get-time" {
			return false
		}
		if a.count("guest-get-time") == 1 {
			time.Sleep(300 * time.Millisecond)
			a.send([]byte(`{"return": 111}` + "\n"))
		} else {
			a.send([]byte(`{"return": 222}` + "\n"))
		}
		return true
	}}
	c, a := startAgent(t, cfg, testOptions(t))
	_, err := c.GetTime(ctxTimeout(t, 100*time.Millisecond))
	require.ErrorIs(t, err, ErrTimeout)
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "guest-get-time", te.Command)

	got, err := c.GetTime(ctxTimeout(t, 2*time.Second))
	require.NoError(t, err)
	assert.Equal(t, int64(222), got.UnixNano())
	assert.Equal(t, 2, a.count("guest-sync-delimited"), "a timeout forces a resync")
}

// TestAgentErrorReply proves that an agent error comes back as *Error with
// the command, class and desc, and that the next call resyncs.
func TestAgentErrorReply(t *testing.T) {
	cfg := agentConfig{Hook: func(a *fakeAgent, n int, req agentRequest) bool {
		if req.Execute == "guest-info" {
			a.send([]byte(`{"error": {"class": "CommandNotFound", "desc": "Command guest-info has been disabled"}}` + "\n"))
			return true
		}
		return false
	}}
	c, a := startAgent(t, cfg, testOptions(t))
	ctx := ctxTimeout(t, 2*time.Second)
	_, err := c.Info(ctx)
	var ae *Error
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, Error{Command: "guest-info", Class: "CommandNotFound", Desc: "Command guest-info has been disabled"}, *ae)
	assert.Equal(t, "guest agent refused guest-info: Command guest-info has been disabled (CommandNotFound)", err.Error())
	require.NoError(t, c.Ping(ctx))
	assert.Equal(t, 2, a.count("guest-sync-delimited"))
}

// TestWrongShapeReply proves that an answer of the wrong type is an error
// (not a zero value) and forces a resync.
func TestWrongShapeReply(t *testing.T) {
	cfg := agentConfig{Hook: func(a *fakeAgent, n int, req agentRequest) bool {
		if req.Execute == "guest-get-time" {
			a.send([]byte(`{"return": "noon"}` + "\n"))
			return true
		}
		return false
	}}
	c, a := startAgent(t, cfg, testOptions(t))
	ctx := ctxTimeout(t, 2*time.Second)
	_, err := c.GetTime(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"noon"`)
	require.NoError(t, c.Ping(ctx))
	assert.Equal(t, 2, a.count("guest-sync-delimited"))
}

// TestSuspendRAMSuccessNoReply proves that SuspendRAM succeeds without any
// answer (qga sends none on success), returning after the grace period and
// well before the call's deadline, having sent the request exactly once.
func TestSuspendRAMSuccessNoReply(t *testing.T) {
	opts := testOptions(t)
	opts.SuspendGrace = 80 * time.Millisecond
	c, a := startAgent(t, agentConfig{}, opts)
	start := time.Now()
	require.NoError(t, c.SuspendRAM(ctxTimeout(t, 5*time.Second)))
	elapsed := time.Since(start)
	assert.GreaterOrEqual(t, elapsed, 80*time.Millisecond)
	assert.Less(t, elapsed, time.Second)
	assert.Equal(t, 1, a.count("guest-suspend-ram"))
}

// TestSuspendRAMUnsupported proves that an error reply within the grace
// period is returned as *Error with advice about ACPI S3.
func TestSuspendRAMUnsupported(t *testing.T) {
	opts := testOptions(t)
	opts.SuspendGrace = 2 * time.Second
	cfg := agentConfig{SuspendErr: &Error{Class: "GenericError", Desc: "this feature or command is not currently supported"},
		SuspendDelay: 20 * time.Millisecond}
	c, _ := startAgent(t, cfg, opts)
	start := time.Now()
	err := c.SuspendRAM(ctxTimeout(t, 5*time.Second))
	assert.Less(t, time.Since(start), time.Second, "an error ends the grace at once")
	var ae *Error
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "guest-suspend-ram", ae.Command)
	assert.Equal(t, "GenericError", ae.Class)
	assert.Equal(t, "this feature or command is not currently supported", ae.Desc)
	assert.Contains(t, err.Error(), "/sys/power/mem_sleep")
}

// TestSuspendRAMLateErrorIgnored proves that an error arriving after the
// grace period does not fail SuspendRAM, and is not mistaken for the answer
// to the next call (which resyncs).
func TestSuspendRAMLateErrorIgnored(t *testing.T) {
	opts := testOptions(t)
	opts.SuspendGrace = 30 * time.Millisecond
	cfg := agentConfig{SuspendErr: &Error{Class: "GenericError", Desc: "too late"}, SuspendDelay: 150 * time.Millisecond}
	c, a := startAgent(t, cfg, opts)
	ctx := ctxTimeout(t, 2*time.Second)
	require.NoError(t, c.SuspendRAM(ctx))
	require.NoError(t, c.Ping(ctx))
	assert.Equal(t, 2, a.count("guest-sync-delimited"))
}

// TestSuspendRAMCancelEndsGrace proves that the caller can end the grace
// early by cancelling ctx (e.g. when it saw the S3 write), getting nil.
func TestSuspendRAMCancelEndsGrace(t *testing.T) {
	opts := testOptions(t)
	opts.SuspendGrace = 10 * time.Second
	c, a := startAgent(t, agentConfig{}, opts)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for a.count("guest-suspend-ram") == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	require.NoError(t, c.SuspendRAM(ctx))
	assert.Less(t, time.Since(start), time.Second)
}

// TestSuspendRAMNotSentWhenUnsynced proves that guest-suspend-ram is never
// sent on a line that could not be synced: a dead agent gives a timeout,
// not a false success.
func TestSuspendRAMNotSentWhenUnsynced(t *testing.T) {
	c, a := startAgent(t, agentConfig{Silent: true}, testOptions(t))
	err := c.SuspendRAM(ctxTimeout(t, 100*time.Millisecond))
	assert.ErrorIs(t, err, ErrTimeout)
	assert.Contains(t, err.Error(), "guest-suspend-ram not sent: guest agent did not answer guest-sync-delimited")
	assert.Zero(t, a.count("guest-suspend-ram"))
}

// TestConcurrentCallsSerialized proves that calls from many goroutines are
// serialized on the line and each gets its own answer.
func TestConcurrentCallsSerialized(t *testing.T) {
	c, a := startAgent(t, agentConfig{}, testOptions(t))
	ctx := ctxTimeout(t, 5*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				if g%2 == 0 {
					errs <- c.Ping(ctx)
				} else {
					_, err := c.GetTime(ctx)
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, 1, a.count("guest-sync-delimited"))
}

// TestCloseUnblocksCalls proves that Close makes a waiting call return
// ErrClosed at once, later calls fail with ErrClosed, and the reader
// goroutine ends.
func TestCloseUnblocksCalls(t *testing.T) {
	c, _ := startAgent(t, agentConfig{Silent: true}, testOptions(t))
	errc := make(chan error, 1)
	go func() { errc <- c.Ping(ctxTimeout(t, 10*time.Second)) }()
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, c.Close())
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, ErrClosed)
	case <-time.After(time.Second):
		t.Fatal("Close did not unblock the call")
	}
	assert.ErrorIs(t, c.Ping(context.Background()), ErrClosed)
	select {
	case <-c.readerDone:
	case <-time.After(time.Second):
		t.Fatal("reader goroutine still running after Close")
	}
	assert.NoError(t, c.Close(), "Close is idempotent")
}

// blockingRW reads nothing ever and has no Close: the worst reader.
type blockingRW struct{ block chan struct{} }

func (b blockingRW) Read(p []byte) (int, error)  { <-b.block; return 0, io.EOF }
func (b blockingRW) Write(p []byte) (int, error) { <-b.block; return 0, io.ErrClosedPipe }

// TestCloseWithReaderBlockedForever proves that Close returns and calls fail
// with ErrClosed even when the underlying reader and writer block forever and
// cannot be closed.
func TestCloseWithReaderBlockedForever(t *testing.T) {
	rw := blockingRW{block: make(chan struct{})}
	defer close(rw.block) // let the goroutines go at the end
	c := New(rw, Options{})
	errc := make(chan error, 1)
	go func() { errc <- c.Ping(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Close blocked")
	}
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, ErrClosed)
	case <-time.After(time.Second):
		t.Fatal("call not released by Close")
	}
}

// TestAgentHangup proves that when the other end closes the line, a
// waiting call fails at once with an error that says so and wraps io.EOF,
// and later calls fail fast.
func TestAgentHangup(t *testing.T) {
	cfg := agentConfig{Hook: func(a *fakeAgent, n int, req agentRequest) bool {
		if req.Execute == "guest-ping" {
			a.conn.Close()
			return true
		}
		return false
	}}
	c, _ := startAgent(t, cfg, testOptions(t))
	start := time.Now()
	err := c.Ping(ctxTimeout(t, 5*time.Second))
	require.Error(t, err)
	assert.Less(t, time.Since(start), time.Second)
	assert.ErrorIs(t, err, io.EOF)
	assert.Contains(t, err.Error(), "line closed")
	assert.NotErrorIs(t, err, ErrTimeout)

	start = time.Now()
	assert.ErrorIs(t, c.Ping(ctxTimeout(t, 5*time.Second)), io.EOF)
	assert.Less(t, time.Since(start), 100*time.Millisecond)
}

// TestCancelIsNotTimeout proves that a cancelled context gives a
// cancellation error, not ErrTimeout.
func TestCancelIsNotTimeout(t *testing.T) {
	c, _ := startAgent(t, agentConfig{Silent: true}, testOptions(t))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	err := c.Ping(ctx)
	assert.ErrorIs(t, err, context.Canceled)
	assert.False(t, errors.Is(err, ErrTimeout))
}

// TestQueueTimeout proves that a call waiting behind another one that holds
// the line is bounded by its own deadline and says why.
func TestQueueTimeout(t *testing.T) {
	c, _ := startAgent(t, agentConfig{Silent: true}, testOptions(t))
	first := make(chan error, 1)
	go func() { first <- c.Ping(ctxTimeout(t, 5*time.Second)) }()
	time.Sleep(30 * time.Millisecond)
	err := c.Ping(ctxTimeout(t, 50*time.Millisecond))
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, StageQueue, te.Stage)
	assert.Contains(t, err.Error(), "earlier call held it")
	c.Close()
	assert.ErrorIs(t, <-first, ErrClosed)
}
