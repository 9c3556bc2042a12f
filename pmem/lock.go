package pmem

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/pmem/flock"
)

// DefaultLockDir holds one record per locked backing, naming the process
// and VM that hold it.
const DefaultLockDir = "/run/pmvm/locks"

// lockDirDefault is used when Spec.LockDir is ""; tests point it elsewhere.
var lockDirDefault = DefaultLockDir

func lockDirOf(dir string) string {
	if dir == "" {
		return lockDirDefault
	}
	return dir
}

// ErrInUse is wrapped by Open's error when another process (or another
// Region of this one) holds the backing.
var ErrInUse = errors.New("memory backing is in use")

// The lock on a backing is flock(LOCK_EX|LOCK_NB) (package flock) on the
// open file or device itself: it works the same for regular files, tmpfs, hugetlbfs and
// device-dax character devices, follows the inode whatever path reached it,
// survives exec (restart mode hands the descriptor on) and goes away by
// itself when the holder dies. flock does not say who holds it, so the
// holder also writes a record (pid, VM, block) into the lock directory, and
// a refused process cross-checks the record against /proc/locks, which does
// name the pid.

// backingLock is a held lock: the record to remove on release. The flock
// itself belongs to the Region's file and goes with it.
type backingLock struct {
	record string // "" when no record could be written
}

// lockKey names a backing's lock record: the device number of a device-dax
// instance (whatever node reached it), else st_dev and st_ino.
func lockKey(b *Backing) string {
	if b.Kind == KindDevDax {
		return fmt.Sprintf("chr-%d-%d", unix.Major(b.Rdev), unix.Minor(b.Rdev))
	}
	return fmt.Sprintf("%d-%d-%d", unix.Major(b.Dev), unix.Minor(b.Dev), b.Ino)
}

// lockBacking takes the exclusive lock on f for spec and writes the holder
// record. Refused: the error names the holder.
func lockBacking(spec Spec, f *os.File, b *Backing) (*backingLock, error) {
	h := spec.hostOrReal()
	if err := flock.TryExclusive(f); errors.Is(err, flock.ErrHeld) {
		holder := holderOf(h, spec.LockDir, b)
		if holder == "" {
			holder = "another process (not named in " + h.locks + ")"
		}
		return nil, spec.refuse(ErrInUse, "is in use by %s; two VMs must never map the same guest memory: stop that VM first, or give this block another backing", holder)
	} else if err != nil {
		return nil, spec.errorf("%w", err)
	}
	l := &backingLock{}
	dir := lockDirOf(spec.LockDir)
	// The record is best effort: the flock is the lock. Without a record a
	// refused process still names the pid from /proc/locks.
	if err := os.MkdirAll(dir, 0o755); err == nil {
		path := filepath.Join(dir, lockKey(b)+".lock")
		rec := fmt.Sprintf("pid=%d\nvm=%s\nblock=%s\nbacking=%s\nsince=%s\n",
			os.Getpid(), spec.VM, spec.Name, spec.Backing, time.Now().UTC().Format(time.RFC3339))
		tmp := path + ".tmp." + strconv.Itoa(os.Getpid())
		if err := os.WriteFile(tmp, []byte(rec), 0o644); err == nil {
			if err := os.Rename(tmp, path); err == nil {
				l.record = path
			} else {
				_ = os.Remove(tmp)
			}
		}
	}
	return l, nil
}

// release removes the record while the flock is still held (so that no new
// holder's record is removed); the caller then closes the file.
func (l *backingLock) release() {
	if l == nil || l.record == "" {
		return
	}
	if rec := readRecord(l.record); rec.pid == os.Getpid() {
		_ = os.Remove(l.record)
	}
	l.record = ""
}

type lockRecord struct {
	pid          int
	vm, block    string
	backing, raw string
}

func readRecord(path string) lockRecord {
	b, err := os.ReadFile(path)
	if err != nil {
		return lockRecord{}
	}
	var r lockRecord
	r.raw = string(b)
	for _, line := range strings.Split(r.raw, "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "pid":
			r.pid, _ = strconv.Atoi(v)
		case "vm":
			r.vm = v
		case "block":
			r.block = v
		case "backing":
			r.backing = v
		}
	}
	return r
}

// holderOf names whoever holds a flock on the backing, or "" if nobody
// does (or it cannot be told). The pid comes from /proc/locks; the VM and
// block from pmvm's record when the record names that pid.
func holderOf(h *host, lockDir string, b *Backing) string {
	if b.Kind == KindAnonymous || b.Kind == KindMemfd || !b.Exists {
		return ""
	}
	pids := flockHolders(h.locks, b.Dev, b.Ino)
	rec := readRecord(filepath.Join(lockDirOf(lockDir), lockKey(b)+".lock"))
	if len(pids) == 0 {
		return ""
	}
	for _, pid := range pids {
		if pid == rec.pid {
			return fmt.Sprintf("pid %d (pmvm, vm %q, block %q)", pid, rec.vm, rec.block)
		}
	}
	comm := readSysString(filepath.Join(h.proc, strconv.Itoa(pids[0]), "comm"))
	if comm == "" {
		return fmt.Sprintf("pid %d", pids[0])
	}
	return fmt.Sprintf("pid %d (%s)", pids[0], comm)
}

// flockHolders returns the pids /proc/locks shows holding a FLOCK on the
// inode dev:ino. Lines look like
//
//	1: FLOCK  ADVISORY  WRITE 29756 00:06:3 0 EOF
//
// with the device's major and minor in hex and the inode in decimal;
// waiters ("1: -> FLOCK ...") are skipped.
func flockHolders(locksPath string, dev, ino uint64) []int {
	f, err := os.Open(locksPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
	var pids []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" {
			continue
		}
		if fields[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(fields[4]); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}
