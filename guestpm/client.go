package guestpm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Defaults for Options.
const (
	DefaultTimeout      = 5 * time.Second
	DefaultSuspendGrace = 500 * time.Millisecond
	DefaultSyncRetry    = time.Second
	DefaultGuestDevice  = "/dev/ttyS1"
)

// eventQueue is how many decoded events wait for a call before the reader
// starts dropping them. Events only pile up when no call is waiting, and
// then they are stale by definition; a call in flight drains them as they
// come.
const eventQueue = 64

// Options tune a Client; the zero value means every default.
type Options struct {
	// Timeout bounds each call whose context has no deadline (DefaultTimeout).
	Timeout time.Duration
	// SuspendGrace is how long SuspendRAM listens for an error reply after
	// the request is delivered (DefaultSuspendGrace).
	SuspendGrace time.Duration
	// SyncRetry is how long Sync waits for an answer before sending a new
	// guest-sync-delimited with a fresh id, in case the line lost bytes of
	// the request or of the answer (DefaultSyncRetry).
	SyncRetry time.Duration
	// MaxMessage bounds one message from the agent (DefaultMaxMessage).
	MaxMessage int
	// GuestDevice is the agent's serial device inside the guest, named in
	// timeout errors (DefaultGuestDevice).
	GuestDevice string
	// Log receives debug records of dropped and stale data. The zero Logger
	// discards everything.
	Log zerolog.Logger
}

// Client talks to one qemu-guest-agent over one connection. Calls are
// serialized (the protocol has one request in flight at a time) and are safe
// to make from several goroutines. Every call is bounded by its context's
// deadline, or Options.Timeout if it has none.
type Client struct {
	rw   io.ReadWriter
	opts Options
	log  zerolog.Logger

	events chan Event    // reader goroutine -> the call in flight; lossy when full
	writes chan writeReq // calls -> writer goroutine

	// sem is the line: a call holds it (one element) for its whole life.
	// It guards synced.
	sem    chan struct{}
	synced bool

	closeOnce  sync.Once
	closed     chan struct{} // closed by Close
	readerDone chan struct{} // closed when the reader goroutine returns
	readErr    error         // why the reader stopped; written before readerDone closes
	dropped    atomic.Uint64 // events dropped because nobody was listening
}

type writeReq struct {
	b        []byte
	deadline time.Time
	done     chan error // buffered: the writer never blocks on an abandoned call
}

// New starts a Client on rw, which the Client owns from now on: Close
// closes it if it is an io.Closer. rw is typically one end of a net.Pipe or
// a unix socket bridged to the guest's COM2 UART. If rw has
// SetWriteDeadline (a net.Conn), writes are bounded by the call's deadline
// there too, so an abandoned request cannot trickle into the guest later.
func New(rw io.ReadWriter, opts Options) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.SuspendGrace <= 0 {
		opts.SuspendGrace = DefaultSuspendGrace
	}
	if opts.SyncRetry <= 0 {
		opts.SyncRetry = DefaultSyncRetry
	}
	if opts.GuestDevice == "" {
		opts.GuestDevice = DefaultGuestDevice
	}
	c := &Client{
		rw:         rw,
		opts:       opts,
		log:        opts.Log,
		events:     make(chan Event, eventQueue),
		writes:     make(chan writeReq),
		sem:        make(chan struct{}, 1),
		closed:     make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	go c.readLoop(NewDecoder(opts.MaxMessage))
	go c.writeLoop()
	return c
}

// Close stops the Client: calls in flight and later calls return ErrClosed.
// It closes rw if rw is an io.Closer, which ends the reader goroutine; for a
// reader without Close, the goroutine ends when its pending Read returns.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.closed)
		if cl, ok := c.rw.(io.Closer); ok {
			err = cl.Close()
		}
	})
	return err
}

// readLoop is the only reader of rw: it turns bytes into events and hands
// them to whichever call is waiting, never blocking on a call.
func (c *Client) readLoop(dec *Decoder) {
	defer close(c.readerDone)
	buf := make([]byte, 4096)
	var evs []Event
	for {
		n, err := c.rw.Read(buf)
		if n > 0 {
			before := dec.Stats()
			evs = dec.Feed(evs[:0], buf[:n])
			if after := dec.Stats(); after.Junk != before.Junk {
				c.log.Debug().Uint64("bytes", after.Junk-before.Junk).
					Uint64("overlong", after.Overlong-before.Overlong).
					Uint64("truncated", after.Truncated-before.Truncated).
					Msg("guest agent: discarded junk from the line")
			}
			for i, ev := range evs {
				select {
				case c.events <- ev:
				default:
					c.dropped.Add(1)
					c.log.Debug().Bool("sentinel", ev.Sentinel).Int("len", len(ev.Msg)).
						Msg("guest agent: dropped a message nobody waited for")
				}
				evs[i] = Event{} // do not pin delivered messages
			}
		}
		if err != nil {
			c.readErr = err
			return
		}
		select {
		case <-c.closed:
			c.readErr = ErrClosed
			return
		default:
		}
	}
}

// writeLoop is the only writer of rw, so a Write stuck on a full line blocks
// this goroutine and not a caller past its deadline.
func (c *Client) writeLoop() {
	wd, hasDeadline := c.rw.(interface{ SetWriteDeadline(time.Time) error })
	for {
		select {
		case w := <-c.writes:
			if hasDeadline {
				_ = wd.SetWriteDeadline(w.deadline)
			}
			_, err := c.rw.Write(w.b)
			w.done <- err
		case <-c.closed:
			return
		}
	}
}

// budget gives ctx a deadline if it has none, and says how long the call has.
func (c *Client) budget(ctx context.Context) (context.Context, context.CancelFunc, time.Duration) {
	if dl, ok := ctx.Deadline(); ok {
		d := time.Until(dl)
		if d < 0 {
			d = 0
		}
		return ctx, func() {}, d.Round(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	return ctx, cancel, c.opts.Timeout
}

// acquire takes the line for one call.
func (c *Client) acquire(ctx context.Context, cmd string, budget time.Duration) error {
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return c.ctxErr(ctx, cmd, StageQueue, budget, nil)
	case <-c.closed:
		return ErrClosed
	}
}

func (c *Client) release() { <-c.sem }

// ctxErr turns the end of ctx into a TimeoutError (deadline) or a
// cancellation error.
func (c *Client) ctxErr(ctx context.Context, cmd, stage string, budget time.Duration, last *Error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &TimeoutError{Command: cmd, Stage: stage, After: budget, Device: c.opts.GuestDevice,
			LastAgentError: last, cause: ctx.Err()}
	}
	return fmt.Errorf("guest agent %s cancelled: %w", cmd, ctx.Err())
}

// lineErr explains why the reader stopped.
func (c *Client) lineErr() error {
	if errors.Is(c.readErr, ErrClosed) {
		return ErrClosed
	}
	select {
	case <-c.closed:
		return ErrClosed
	default:
	}
	return fmt.Errorf("guest agent line closed (%w): reconnect to the agent socket and make a new Client", c.readErr)
}

var errTick = errors.New("tick")

// next waits for the next event, the end of ctx, a tick (nil: none), Close,
// or the end of the line. Events already decoded are delivered before the
// line's end is reported.
func (c *Client) next(ctx context.Context, tick <-chan time.Time) (Event, error) {
	select {
	case ev := <-c.events:
		return ev, nil
	case <-ctx.Done():
		return Event{}, ctx.Err()
	case <-tick:
		return Event{}, errTick
	case <-c.closed:
		return Event{}, ErrClosed
	case <-c.readerDone:
		select {
		case ev := <-c.events:
			return ev, nil
		default:
			return Event{}, c.lineErr()
		}
	}
}

// drain drops events that arrived while nobody asked: they are stale.
func (c *Client) drain() {
	for {
		select {
		case ev := <-c.events:
			c.log.Debug().Bool("sentinel", ev.Sentinel).Int("len", len(ev.Msg)).
				Msg("guest agent: dropped stale data before a request")
		default:
			return
		}
	}
}

// write hands b to the writer and waits until rw took all of it.
func (c *Client) write(ctx context.Context, cmd string, budget time.Duration, b []byte) error {
	dl, _ := ctx.Deadline()
	w := writeReq{b: b, deadline: dl, done: make(chan error, 1)}
	select {
	case c.writes <- w:
	case <-ctx.Done():
		return c.ctxErr(ctx, cmd, StageSend, budget, nil)
	case <-c.closed:
		return ErrClosed
	}
	select {
	case err := <-w.done:
		if err == nil {
			return nil
		}
		select {
		case <-c.closed:
			return ErrClosed
		default:
		}
		if ctx.Err() != nil {
			return c.ctxErr(ctx, cmd, StageSend, budget, nil)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) { // the write deadline we set fired first
			return &TimeoutError{Command: cmd, Stage: StageSend, After: budget, Device: c.opts.GuestDevice,
				cause: context.DeadlineExceeded}
		}
		return fmt.Errorf("write %s to the guest agent: %w", cmd, err)
	case <-ctx.Done():
		return c.ctxErr(ctx, cmd, StageSend, budget, nil)
	case <-c.closed:
		return ErrClosed
	}
}

// Sync (re)establishes a clean exchange with the agent with
// guest-sync-delimited: it sends 0xFF and the request with a random id, and
// waits for the answer carrying that id, ignoring everything else (junk,
// replies to earlier requests, answers to earlier syncs). If no answer comes
// within Options.SyncRetry it sends a new request with a new id, and from
// then on only the newest id counts: the agent answers in order, so once it
// is seen nothing of ours is still pending. The agent's 0xFF before its
// answer resets the Decoder, so a half reply left on the line cannot swallow
// the answer; the answer itself is recognised by its id alone, so a 0xFF lost
// on the line costs nothing. Commands call Sync themselves
// when needed; call it directly to check that the agent is there, e.g.
// after the guest woke.
func (c *Client) Sync(ctx context.Context) error {
	ctx, cancel, budget := c.budget(ctx)
	defer cancel()
	if err := c.acquire(ctx, "guest-sync-delimited", budget); err != nil {
		return err
	}
	defer c.release()
	return c.sync(ctx, budget)
}

// newID returns a random sync id in [1, 2^53): any JSON implementation,
// even one that parses numbers as doubles, echoes it exactly.
func newID() int64 { return rand.Int64N(1<<53-1) + 1 }

// sync does Sync's work; the caller holds the line.
func (c *Client) sync(ctx context.Context, budget time.Duration) error {
	const cmd = "guest-sync-delimited"
	c.synced = false
	c.drain()
	var lastErr *Error
	for attempt := 1; ; attempt++ {
		id := newID()
		frame := fmt.Appendf([]byte{Sentinel}, `{"execute":"%s","arguments":{"id":%d}}`+"\n", cmd, id)
		if err := c.write(ctx, cmd, budget, frame); err != nil {
			return err
		}
		retry := time.NewTimer(c.opts.SyncRetry)
		for waiting := true; waiting; {
			ev, err := c.next(ctx, retry.C)
			switch {
			case err == errTick:
				c.log.Debug().Int("attempt", attempt).Msg("guest agent: no answer to guest-sync-delimited yet, resending")
				waiting = false
				continue
			case err != nil:
				retry.Stop()
				if ctx.Err() != nil {
					return c.ctxErr(ctx, cmd, StageReply, budget, lastErr)
				}
				return err
			case ev.Sentinel:
				continue
			}
			rep, perr := ParseReply(ev.Msg)
			switch {
			case perr != nil:
				c.log.Debug().Err(perr).Msg("guest agent: ignored a non-reply while syncing")
			case rep.Err != nil:
				// e.g. qga complaining about the junk the 0xFF flushed, or an
				// error meant for an earlier client: not ours.
				lastErr = rep.Err
				c.log.Debug().Str("class", rep.Err.Class).Str("desc", rep.Err.Desc).
					Msg("guest agent: ignored an error reply while syncing")
			default:
				var got int64
				if json.Unmarshal(rep.Return, &got) == nil && got == id {
					retry.Stop()
					c.synced = true
					return nil
				}
				c.log.Debug().RawJSON("return", rep.Return).Int64("want", id).
					Msg("guest agent: ignored a stale reply while syncing")
			}
		}
	}
}

// call runs one command whose success reply is expected: it syncs first if
// needed, sends the request, waits for the reply and decodes its "return"
// into out (nil: ignore it).
func (c *Client) call(ctx context.Context, cmd string, args any, out any) error {
	ctx, cancel, budget := c.budget(ctx)
	defer cancel()
	if err := c.acquire(ctx, cmd, budget); err != nil {
		return err
	}
	defer c.release()
	if err := c.send(ctx, cmd, budget, args); err != nil {
		return err
	}
	for {
		ev, err := c.next(ctx, nil)
		if err != nil {
			c.synced = false
			if ctx.Err() != nil {
				return c.ctxErr(ctx, cmd, StageReply, budget, nil)
			}
			return err
		}
		if ev.Sentinel {
			continue
		}
		rep, perr := ParseReply(ev.Msg)
		if perr != nil {
			c.log.Debug().Err(perr).Str("command", cmd).Msg("guest agent: ignored a non-reply")
			continue
		}
		if rep.Err != nil {
			c.synced = false // cheap insurance: resync after any failure
			rep.Err.Command = cmd
			return rep.Err
		}
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(rep.Return, out); err != nil {
			c.synced = false // a reply of the wrong shape: not ours, or an odd agent
			return fmt.Errorf("guest agent answered %s with %s, which is not the expected shape: %w",
				cmd, abbreviate(rep.Return), err)
		}
		return nil
	}
}

// send syncs if needed and writes one request; the caller holds the line.
func (c *Client) send(ctx context.Context, cmd string, budget time.Duration, args any) error {
	select {
	case <-c.readerDone:
		if len(c.events) == 0 {
			return c.lineErr()
		}
	default:
	}
	if !c.synced {
		if err := c.sync(ctx, budget); err != nil {
			return err
		}
	}
	req, err := encodeRequest(cmd, args)
	if err != nil {
		return err
	}
	c.drain()
	if err := c.write(ctx, cmd, budget, req); err != nil {
		c.synced = false
		return err
	}
	return nil
}

func encodeRequest(cmd string, args any) ([]byte, error) {
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
	}{cmd, args}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode %s request: %w", cmd, err)
	}
	return append(b, '\n'), nil
}

func abbreviate(b []byte) string {
	const max = 120
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

// Ping checks that the agent answers (guest-ping).
func (c *Client) Ping(ctx context.Context) error {
	return c.call(ctx, "guest-ping", nil, nil)
}

// Info is the answer to guest-info.
type Info struct {
	Version  string        `json:"version"`
	Commands []CommandInfo `json:"supported_commands"`
}

// CommandInfo describes one command the agent knows.
type CommandInfo struct {
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
	// SuccessResponse is false for commands that answer nothing on success
	// (guest-suspend-ram, guest-shutdown, ...).
	SuccessResponse bool `json:"success-response"`
}

// Supports reports whether the agent offers the command and it is enabled.
func (i Info) Supports(name string) bool {
	for _, c := range i.Commands {
		if c.Name == name {
			return c.Enabled
		}
	}
	return false
}

// Info asks the agent for its version and commands (guest-info).
func (c *Client) Info(ctx context.Context) (Info, error) {
	var info Info
	err := c.call(ctx, "guest-info", nil, &info)
	return info, err
}

// GetTime reads the guest's system clock (guest-get-time).
func (c *Client) GetTime(ctx context.Context) (time.Time, error) {
	var ns int64
	if err := c.call(ctx, "guest-get-time", nil, &ns); err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, ns), nil
}

// Range of instants guest-set-time can carry (int64 ns since the epoch).
var (
	minSetTime = time.Unix(0, -1<<63)
	maxSetTime = time.Unix(0, 1<<63-1)
)

// SetTime sets the guest's system clock to t, and qga then writes it to the
// guest's RTC (guest-set-time with "time" in ns since the epoch). The zero
// t sends no time: the guest then sets its system clock from its RTC.
func (c *Client) SetTime(ctx context.Context, t time.Time) error {
	if t.IsZero() {
		return c.call(ctx, "guest-set-time", nil, nil)
	}
	if t.Before(minSetTime) || t.After(maxSetTime) {
		return fmt.Errorf("guest-set-time: %v is outside what int64 nanoseconds since 1970 can carry", t)
	}
	return c.call(ctx, "guest-set-time", struct {
		Time int64 `json:"time"`
	}{t.UnixNano()}, nil)
}

// SuspendRAM asks the guest to suspend to RAM (guest-suspend-ram, ACPI S3).
// qga answers nothing on success, because the guest goes to sleep, so
// SuspendRAM returns nil once the request is delivered and
// Options.SuspendGrace passed without an error reply; it returns the agent's
// *Error (errors.As) if one arrives within the grace, e.g. when the guest
// offers no suspend to RAM. The caller confirms the suspend by the guest's
// SLP_TYP=S3|SLP_EN write to PM1a_CNT, and may cancel ctx when it sees it to
// end the grace early (nil is then returned too).
//
// A send-stage timeout means the request may be stuck on the line and might
// still reach the guest later, so a caller must still expect the S3 write.
// After SuspendRAM the next call resyncs, as the protocol asks after a
// guest resumes.
func (c *Client) SuspendRAM(ctx context.Context) error {
	const cmd = "guest-suspend-ram"
	ctx, cancel, budget := c.budget(ctx)
	defer cancel()
	if err := c.acquire(ctx, cmd, budget); err != nil {
		return err
	}
	defer c.release()
	if err := c.send(ctx, cmd, budget, nil); err != nil {
		if te := (*TimeoutError)(nil); errors.As(err, &te) && te.Command == cmd {
			return err // part of the request may be on the line: see above
		}
		return fmt.Errorf("%s not sent: %w", cmd, err)
	}
	c.synced = false // the agent sleeps with the guest; whatever comes next needs a fresh sync
	grace := time.NewTimer(c.opts.SuspendGrace)
	defer grace.Stop()
	for {
		ev, err := c.next(ctx, grace.C)
		if err != nil {
			if err != errTick && ctx.Err() == nil {
				c.log.Debug().Err(err).Msg("guest agent: line ended after guest-suspend-ram was delivered")
			}
			return nil // delivered, and no error reply while we listened
		}
		if ev.Sentinel {
			continue
		}
		rep, perr := ParseReply(ev.Msg)
		if perr != nil {
			continue
		}
		if rep.Err != nil {
			rep.Err.Command = cmd
			return fmt.Errorf("%w; pmvm needs ACPI S3: in the guest, /sys/power/state must list mem and /sys/power/mem_sleep must offer deep", rep.Err)
		}
		return nil // an agent that does answer success
	}
}
