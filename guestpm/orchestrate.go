package guestpm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"
)

// Machine is what suspend and wake need from the VMM. The VMM's Machine
// satisfies it through a thin adapter; guestpm never imports the VMM.
type Machine interface {
	// RunState names the machine's state ("running", "suspended", ...).
	RunState() string
	// WaitSuspended returns once the guest has written S3 to PM1a_CNT and
	// every vCPU is parked, or ctx ends.
	WaitSuspended(ctx context.Context) error
	// WakeOnSuspend says what the guest's next S3 entry leads to: staying
	// in S3 (false: a suspend is asked for), or a wake at once (true, why:
	// the suspend asked for was given up on, and a guest reaching S3 late
	// would be left asleep with nothing to wake it); true also wakes a
	// guest already in S3.
	WakeOnSuspend(wake bool, why string)
}

// Line hands out the agent's serial line for the length of one operation.
type Line interface {
	// Borrow waits (up to ctx) for the line to be free and takes it.
	Borrow(ctx context.Context) (conn io.ReadWriteCloser, release func(), err error)
}

// Suspend asks the guest agent to suspend the guest to RAM and waits until
// the machine is really in S3. On any failure (no agent, the agent refuses,
// the guest never reaches S3 within ctx) it returns an error that says what
// happened; the guest is never forced: it keeps running, or, should it
// still reach S3 after Suspend gave up, the machine wakes it at once.
func Suspend(ctx context.Context, m Machine, line Line, log zerolog.Logger) (time.Duration, error) {
	start := time.Now()
	if st := m.RunState(); st != "running" {
		return 0, fmt.Errorf("the guest is %s, not running: nothing to suspend", st)
	}
	conn, release, err := line.Borrow(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	c := New(conn, Options{Log: log})
	defer c.Close()
	// From here the guest may get the request: a late S3 must not be left
	// asleep if this suspend fails.
	m.WakeOnSuspend(false, "")
	giveUp := func(err error) (time.Duration, error) {
		m.WakeOnSuspend(true, err.Error())
		return 0, err
	}

	// Stop waiting for a late error reply as soon as the guest is in S3.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inS3 := make(chan error, 1)
	go func() {
		err := m.WaitSuspended(sctx)
		if err == nil {
			cancel() // in S3: end SuspendRAM's wait for an error reply now
		}
		inS3 <- err
	}()

	if err := c.SuspendRAM(sctx); err != nil && !errors.Is(err, context.Canceled) {
		return giveUp(fmt.Errorf("%w; the guest keeps running (should it still reach S3, pmvm wakes it)", err))
	}
	select {
	case err := <-inS3:
		if err != nil {
			return giveUp(fmt.Errorf("the guest did not reach S3 within %s after guest-suspend-ram (machine is %s; should it still reach S3, pmvm wakes it): %w", time.Since(start).Round(time.Millisecond), m.RunState(), err))
		}
	case <-ctx.Done():
		return giveUp(fmt.Errorf("the guest did not reach S3 within %s after guest-suspend-ram (machine is %s; should it still reach S3, pmvm wakes it)", time.Since(start).Round(time.Millisecond), m.RunState()))
	}
	took := time.Since(start)
	log.Info().Dur("took", took).Msg("guest suspended to RAM through its agent")
	return took, nil
}

// SetTimeAfterWake tells the freshly woken guest the host's time, retrying
// while its agent comes back (it was asleep with the rest of the guest).
func SetTimeAfterWake(ctx context.Context, line Line, log zerolog.Logger) error {
	var last error
	for ctx.Err() == nil {
		conn, release, err := line.Borrow(ctx)
		if err != nil {
			last = err
		} else {
			c := New(conn, Options{Log: log, Timeout: 2 * time.Second})
			// Sync first, so the time is read just before it is sent: a
			// stale time would put the guest clock behind by the handshake.
			err = c.Sync(ctx)
			if err == nil {
				err = c.SetTime(ctx, time.Now())
			}
			c.Close()
			release()
			if err == nil {
				log.Info().Msg("guest clock set through its agent after wake")
				return nil
			}
			last = err
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("could not set the guest clock after wake: %w", last)
}
