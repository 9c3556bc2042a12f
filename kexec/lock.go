package kexec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// hostLockName is the lock file in runtime_dir that keeps two host updates
// or restores (or one of each) from running at once.
const hostLockName = "host-update.lock"

// hostLock is a held host lock; the kernel drops it when the process dies.
type hostLock struct{ f *os.File }

// lockHost takes the host lock in runtimeDir without waiting.
func lockHost(runtimeDir, what string) (*hostLock, error) {
	if err := os.MkdirAll(runtimeDir, 0o755); err != nil {
		return nil, fmt.Errorf("runtime_dir: %w", err)
	}
	path := filepath.Join(runtimeDir, hostLockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("host lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another pmvm host update or restore is running (%s: %s); wait for it to finish", path, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("host lock %s: %w", path, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte("pid "+strconv.Itoa(os.Getpid())+" "+what+"\n"), 0)
	return &hostLock{f: f}, nil
}

func (l *hostLock) release() {
	if l != nil && l.f != nil {
		l.f.Truncate(0)
		l.f.Close()
		l.f = nil
	}
}
