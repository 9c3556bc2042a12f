package kexec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pmvm/pmvm/pmem/flock"
)

// hostLockName is the lock file in runtime_dir that keeps two host updates
// or restores (or one of each) from running at once.
const hostLockName = "host-update.lock"

// hostLock is a held host lock; the kernel drops it when the process dies.
type hostLock struct{ f *flock.File }

// lockHost takes the host lock in runtimeDir without waiting.
func lockHost(runtimeDir, what string) (*hostLock, error) {
	if err := os.MkdirAll(runtimeDir, 0o755); err != nil {
		return nil, fmt.Errorf("runtime_dir: %w", err)
	}
	path := filepath.Join(runtimeDir, hostLockName)
	f, err := flock.TryFile(path, "pid "+strconv.Itoa(os.Getpid())+" "+what)
	var held *flock.HeldError
	switch {
	case errors.As(err, &held):
		return nil, fmt.Errorf("another pmvm host update or restore is running (%s: %s); wait for it to finish", path, held.Holder)
	case err != nil:
		return nil, fmt.Errorf("host lock %s: %w", path, err)
	}
	return &hostLock{f: f}, nil
}

func (l *hostLock) release() {
	if l != nil {
		l.f.Release()
	}
}
