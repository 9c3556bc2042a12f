// Package flock is pmvm's one helper for flock(2) locks: the lock on a
// memory backing (pmem), the host-update lock (kexec) and the lab's cache
// and lab-host locks (qa). A flock follows the open file, not the path,
// survives exec with the descriptor, and goes away when its holder dies,
// so a crashed pmvm never leaves a stale lock behind.
//
// It imports only x/sys, so that pmem (which may import nothing else) can
// use it.
package flock

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrHeld is wrapped by the error of TryExclusive and TryFile when another
// open file description holds the lock.
var ErrHeld = errors.New("locked by another process")

// TryExclusive takes an exclusive flock on f without waiting. When another
// holds it, the error wraps ErrHeld.
func TryExclusive(f *os.File) error { return lock(f, unix.LOCK_EX|unix.LOCK_NB) }

// Exclusive takes an exclusive flock on f, waiting as long as another
// holds it.
func Exclusive(f *os.File) error { return lock(f, unix.LOCK_EX) }

func lock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR): // a signal (Go's preemption among them) interrupted the wait
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return ErrHeld
		default:
			return fmt.Errorf("flock %s: %w", f.Name(), err)
		}
	}
}

// File is a held lock file that names its holder.
type File struct{ f *os.File }

// HeldError is TryFile's refusal: the lock file and the holder line the
// process holding it wrote ("" when it wrote none).
type HeldError struct {
	Path   string
	Holder string
}

func (e *HeldError) Error() string {
	if e.Holder == "" {
		return e.Path + " is " + ErrHeld.Error()
	}
	return e.Path + " is " + ErrHeld.Error() + ": " + e.Holder
}

func (e *HeldError) Unwrap() error { return ErrHeld }

// TryFile opens (creating) the lock file path, takes its lock without
// waiting and writes holder into it, so that a refused process can say who
// holds it. Refused: a *HeldError.
func TryFile(path, holder string) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	if err := TryExclusive(f); err != nil {
		f.Close()
		if errors.Is(err, ErrHeld) {
			b, _ := os.ReadFile(path)
			return nil, &HeldError{Path: path, Holder: strings.TrimSpace(string(b))}
		}
		return nil, err
	}
	// The holder line is for messages only; the flock is the lock.
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(holder+"\n"), 0)
	return &File{f: f}, nil
}

// Release empties the holder line and closes the file, which drops the
// lock. It is safe on a nil or released File.
func (l *File) Release() {
	if l == nil || l.f == nil {
		return
	}
	_ = l.f.Truncate(0)
	l.f.Close()
	l.f = nil
}
