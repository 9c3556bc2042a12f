package kexec

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// progress shows what each VM is doing while saves or restores run in
// parallel. On a terminal it redraws one line per VM (with the time spent
// in the current step) several times a second; elsewhere (a log, a pipe, a
// test) it prints one line per change.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	order  []string
	status map[string]string
	since  map[string]time.Time
	final  map[string]bool
	width  int
	drawn  int
	stop   chan struct{}
	done   chan struct{}
}

// redrawEvery is how often a terminal display refreshes.
const redrawEvery = 100 * time.Millisecond

func newProgress(w io.Writer, names []string) *progress {
	p := &progress{w: w, order: names, status: map[string]string{}, since: map[string]time.Time{},
		final: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	for _, n := range names {
		if len(n) > p.width {
			p.width = len(n)
		}
		p.status[n] = "waiting"
		p.since[n] = time.Now()
	}
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			p.tty = true
		}
	}
	if p.tty {
		go p.loop()
	} else {
		close(p.done)
	}
	return p
}

// set changes name's status; done marks it final (no running clock).
func (p *progress) set(name, status string, done bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status[name], p.since[name], p.final[name] = status, time.Now(), done
	if !p.tty {
		fmt.Fprintf(p.w, "  %-*s  %s\n", p.width, name, status)
		return
	}
	p.drawLocked()
}

func (p *progress) loop() {
	defer close(p.done)
	t := time.NewTicker(redrawEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			p.mu.Lock()
			p.drawLocked()
			p.mu.Unlock()
			return
		case <-t.C:
			p.mu.Lock()
			p.drawLocked()
			p.mu.Unlock()
		}
	}
}

// drawLocked redraws every VM's line in place.
func (p *progress) drawLocked() {
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA", p.drawn)
	}
	for _, n := range p.order {
		line := fmt.Sprintf("  %-*s  %s", p.width, n, p.status[n])
		if !p.final[n] {
			line += fmt.Sprintf(" (%.1fs)", time.Since(p.since[n]).Seconds())
		}
		fmt.Fprintf(p.w, "\x1b[2K%s\n", line)
	}
	p.drawn = len(p.order)
}

// close stops the display after a last redraw.
func (p *progress) close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}
