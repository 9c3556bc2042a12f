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

// The lock on a backing is flock(LOCK_EX|LOCK_NB) (package flock). A
// regular file (tmpfs, hugetlbfs, a DAX filesystem) is locked on the open
// file itself: the flock follows the inode whatever path or hard link
// reached it. A device is not: two nodes made by mknod for one device are
// two inodes, and a flock on each would not conflict (a second VM on an
// alias of /dev/dax0.0 booted in the first one's memory). So a device is
// locked by its identity, a lock file named by its device number in the
// lock directory ("chr-252-0.lock"), which every node of the device leads
// to; its node is flocked too. Either way the lock survives exec with the
// descriptors (restart mode hands them on) and goes away by itself when the
// holder dies.
//
// flock does not say who holds it, so the holder also writes a record (pid,
// VM, block): into a device's lock file, or beside a regular file's lock
// as a file of its own. A refused process cross-checks the record against
// /proc/locks, which does name the pid.

// backingLock is a held lock. The flock on the backing itself belongs to
// the Region's file and goes with it.
type backingLock struct {
	record string      // a regular file's record, to remove; "" when none was written
	device *flock.File // a device's lock file (holding its record), to release
}

// isDevice: the backing is a device node, locked by device number.
func isDevice(b *Backing) bool { return b.Kind == KindDevDax }

// lockKey names a backing's lock record: the device number of a device-dax
// instance (whatever node reached it), else st_dev and st_ino.
func lockKey(b *Backing) string {
	if isDevice(b) {
		return fmt.Sprintf("chr-%d-%d", unix.Major(b.Rdev), unix.Minor(b.Rdev))
	}
	return fmt.Sprintf("%d-%d-%d", unix.Major(b.Dev), unix.Minor(b.Dev), b.Ino)
}

func recordPath(lockDir string, b *Backing) string {
	return filepath.Join(lockDirOf(lockDir), lockKey(b)+".lock")
}

// lockBacking takes the exclusive lock on f for spec and writes the holder
// record. Refused: the error names the holder.
func lockBacking(spec Spec, f *os.File, b *Backing) (*backingLock, error) {
	h := spec.hostOrReal()
	inUse := func() error {
		holder := holderOf(h, spec.LockDir, b)
		if holder == "" {
			holder = "another process (not named in " + h.locks + ")"
		}
		return spec.refuse(ErrInUse, "is in use by %s; two VMs must never map the same guest memory: stop that VM first, or give this block another backing", holder)
	}
	rec := fmt.Sprintf("pid=%d\nvm=%s\nblock=%s\nbacking=%s\nsince=%s",
		os.Getpid(), spec.VM, spec.Name, spec.Backing, time.Now().UTC().Format(time.RFC3339))
	l := &backingLock{}
	dir := lockDirOf(spec.LockDir)
	if isDevice(b) {
		// The device-number lock is the lock: without it, refuse.
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, spec.errorf("cannot make the lock directory %s (a device is locked by a file there named by its device number): %w", dir, err)
		}
		df, err := flock.TryFile(recordPath(spec.LockDir, b), rec)
		if errors.Is(err, flock.ErrHeld) {
			return nil, inUse()
		} else if err != nil {
			return nil, spec.errorf("lock by device number: %w", err)
		}
		l.device = df
	}
	if err := flock.TryExclusive(f); errors.Is(err, flock.ErrHeld) {
		l.release()
		return nil, inUse()
	} else if err != nil {
		l.release()
		return nil, spec.errorf("%w", err)
	}
	if isDevice(b) {
		return l, nil
	}
	// A regular file's record is best effort: the flock is the lock.
	// Without a record a refused process still names the pid from
	// /proc/locks.
	if err := os.MkdirAll(dir, 0o755); err == nil {
		path := recordPath(spec.LockDir, b)
		tmp := path + ".tmp." + strconv.Itoa(os.Getpid())
		if err := os.WriteFile(tmp, []byte(rec+"\n"), 0o644); err == nil {
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
	if l == nil {
		return
	}
	// A device's lock file stays (emptied): removing it while others may
	// have it open would let two processes lock two different files.
	l.device.Release()
	l.device = nil
	if l.record == "" {
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
	path := recordPath(lockDir, b)
	pids := flockHolders(h.locks, b.Dev, b.Ino)
	var st unix.Stat_t
	if isDevice(b) && unix.Stat(path, &st) == nil {
		pids = append(flockHolders(h.locks, st.Dev, st.Ino), pids...)
	}
	rec := readRecord(path)
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
