package flock

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Two opens of one file are two open file descriptions, so within one
// process they contend for a flock exactly as two processes do.
func open(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestTryExclusiveRefusesAHeldLockAndExclusiveWaitsForIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l")
	a, b := open(t, path), open(t, path)
	if err := TryExclusive(a); err != nil {
		t.Fatal(err)
	}
	if err := TryExclusive(b); !errors.Is(err, ErrHeld) {
		t.Fatalf("second TryExclusive: %v, want ErrHeld", err)
	}
	got := make(chan error)
	go func() { got <- Exclusive(b) }()
	select {
	case err := <-got:
		t.Fatalf("Exclusive returned %v while the lock was held", err)
	case <-time.After(50 * time.Millisecond):
	}
	a.Close() // drops a's lock
	if err := <-got; err != nil {
		t.Fatalf("Exclusive after release: %v", err)
	}
}

func TestTryFileNamesItsHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host.lock")
	l, err := TryFile(path, "pid 42 host update")
	if err != nil {
		t.Fatal(err)
	}
	_, err = TryFile(path, "pid 43 restore")
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrHeld) || held.Holder != "pid 42 host update" || held.Path != path {
		t.Fatalf("second TryFile: %#v", err)
	}
	l.Release()
	l.Release() // idempotent
	if b, _ := os.ReadFile(path); len(b) != 0 {
		t.Errorf("released lock file still names %q", b)
	}
	l2, err := TryFile(path, "pid 43 restore")
	if err != nil {
		t.Fatalf("TryFile after Release: %v", err)
	}
	l2.Release()
}

func TestTryFileReportsAnUnopenablePath(t *testing.T) {
	if _, err := TryFile(filepath.Join(t.TempDir(), "missing", "l"), "x"); err == nil || errors.Is(err, ErrHeld) {
		t.Fatalf("TryFile in a missing directory: %v", err)
	}
}
