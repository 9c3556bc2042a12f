package vmm

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// A guest can make pmvm log (a sleep type it was not offered, MMIO to
// nowhere, ...) as fast as it can write to a port; each such log site
// goes through a guestLog, which lets guestLogBurst lines through per
// guestLogWindow and counts the rest.
const (
	guestLogBurst  = 10
	guestLogWindow = time.Minute
)

// guestLog rate-limits one guest-triggered log site. The first line let
// through after some were held back says how many; the machine's last
// line gives the total (guestLogs.suppressed).
type guestLog struct {
	total *atomic.Uint64 // the machine's count of lines held back

	mu      sync.Mutex // guards the fields below
	start   time.Time  // of the current window
	n       int        // lines let through in it
	skipped uint64     // lines held back since the last one let through
}

// guestLogs hands out the limiters of one machine's guest-triggered log
// sites, which share one count of the lines they held back.
type guestLogs struct{ suppressed atomic.Uint64 }

func (g *guestLogs) site() *guestLog { return &guestLog{total: &g.suppressed} }

// event returns ev, or nil (on which every zerolog method is a no-op) when
// this site has written its share of the window.
func (l *guestLog) event(ev *zerolog.Event) *zerolog.Event {
	if ev == nil {
		return nil
	}
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.start) >= guestLogWindow {
		l.start, l.n = now, 0
	}
	if l.n >= guestLogBurst {
		l.skipped++
		l.mu.Unlock()
		l.total.Add(1)
		return ev.Discard()
	}
	l.n++
	skipped := l.skipped
	l.skipped = 0
	l.mu.Unlock()
	if skipped > 0 {
		ev = ev.Uint64("similar_lines_suppressed", skipped)
	}
	if l.n == guestLogBurst {
		ev = ev.Str("rate_limit", "further lines like this one are suppressed for up to "+guestLogWindow.String())
	}
	return ev
}
