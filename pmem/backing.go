package pmem

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/pmem/memspec"
)

const protRW = unix.PROT_READ | unix.PROT_WRITE

func openAnonymous(spec Spec, b *Backing) (*Region, error) {
	flags := unix.MAP_ANONYMOUS | unix.MAP_NORESERVE
	if spec.Shared {
		flags |= unix.MAP_SHARED
	} else {
		flags |= unix.MAP_PRIVATE
	}
	mem, addr, err := mapAligned(-1, spec.Size, b.Align, protRW, flags)
	if err != nil {
		return nil, spec.errorf("mmap %s: %w", memspec.FormatSize(spec.Size), err)
	}
	return newRegion(spec, b, mem, addr, nil, nil), nil
}

func openMemfd(spec Spec, b *Backing) (*Region, error) {
	name := "pmvm:" + spec.Name
	// MFD_NOEXEC_SEAL (Linux 6.3+) keeps newer kernels from warning about
	// executable memfds; older kernels reject the flag with EINVAL.
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_NOEXEC_SEAL)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	}
	if err != nil {
		return nil, spec.errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+name)
	if err := unix.Ftruncate(int(f.Fd()), int64(spec.Size)); err != nil {
		f.Close()
		return nil, spec.errorf("ftruncate to %s: %w", memspec.FormatSize(spec.Size), err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, spec.errorf("fstat: %w", err)
	}
	b.Dev, b.Ino = st.Dev, st.Ino
	mem, addr, err := mapAligned(int(f.Fd()), spec.Size, b.Align, protRW, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, spec.errorf("mmap %s shared: %w", memspec.FormatSize(spec.Size), err)
	}
	return newRegion(spec, b, mem, addr, f, nil), nil
}

// openPath opens, classifies (through the open descriptor: once, and on
// what is mapped), locks and maps a file or device-dax backing. A file it
// created is removed again if anything fails.
func openPath(spec Spec) (*Region, error) {
	path := spec.Backing
	if err := refuseBeforeOpen(spec, spec.hostOrReal()); err != nil {
		return nil, err
	}
	f, created, err := openOrCreate(spec)
	if err != nil {
		return nil, err
	}
	var lock *backingLock
	fail := func(err error) (*Region, error) {
		lock.release()
		f.Close()
		if created {
			// The file is ours and holds nothing yet: leave no half-made
			// backing behind, so that a retry starts clean.
			_ = os.Remove(path)
		}
		return nil, err
	}

	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fail(spec.errorf("fstat: %w", err))
	}
	b, err := inspect(spec, spec.hostOrReal(), int(f.Fd()), &st)
	if err != nil {
		return fail(err)
	}
	if created {
		b.Exists = false // a new file: sized below, after the lock
	}
	if err := finish(spec, b); err != nil {
		return fail(err)
	}
	if err := spec.judge(b); err != nil {
		return fail(err)
	}
	if lock, err = lockBacking(spec, f, b); err != nil {
		return fail(err)
	}
	if created {
		if err := sizeNewFile(f, spec); err != nil {
			return fail(err)
		}
	}
	mem, addr, err := mapBacking(spec, b, f)
	if err != nil {
		return fail(err)
	}
	return newRegion(spec, b, mem, addr, f, lock), nil
}

// mapBacking maps f shared. A file on a DAX filesystem is mapped with
// MAP_SYNC (MAP_SHARED_VALIDATE, so a kernel that cannot honour it says so):
// each write fault then commits the file's block allocation before the guest
// can store to the page, so a kexec cannot lose it. Where MAP_SYNC is
// refused, only modes that do not need the memory across a kexec fall back
// to a plain shared mapping.
func mapBacking(spec Spec, b *Backing, f *os.File) ([]byte, uintptr, error) {
	fd := int(f.Fd())
	if b.mapFlags&unix.MAP_SYNC != 0 {
		mem, addr, err := mapAligned(fd, spec.Size, b.Align, protRW, unix.MAP_SHARED_VALIDATE|unix.MAP_SYNC)
		if err == nil {
			return mem, addr, nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
			return nil, 0, spec.errorf("mmap %s MAP_SHARED_VALIDATE|MAP_SYNC: %w", memspec.FormatSize(spec.Size), err)
		}
		if spec.Mode.OrDefault() == memspec.ModeReboot {
			return nil, 0, spec.refuse(ErrModeRefused, "the filesystem refuses MAP_SYNC (%v), so guest writes could be lost at a kexec (the file's block allocation may not be committed yet); mode reboot needs it: use a device-dax namespace, or a filesystem that supports MAP_SYNC (ext4 or xfs mounted -o dax=always on persistent memory)", err)
		}
	}
	mem, addr, err := mapAligned(fd, spec.Size, b.Align, protRW, unix.MAP_SHARED)
	if err != nil {
		return nil, 0, spec.errorf("mmap %s shared (%s aligned): %w", memspec.FormatSize(spec.Size), memspec.FormatSize(b.Align), err)
	}
	return mem, addr, nil
}

func newRegion(spec Spec, b *Backing, mem []byte, addr uintptr, f *os.File, lock *backingLock) *Region {
	return &Region{
		Name: spec.Name, Kind: b.Kind, Path: spec.path(), Size: spec.Size, Align: b.Align,
		Mem: mem, Class: b.Class, OptIn: b.OptIn, Notes: b.Notes,
		id: b.Identity, file: f, lock: lock, addr: addr,
	}
}

// openOrCreate opens the backing read-write. A missing file is judged from
// its directory (may it be created, would it honour the mode) and then,
// with spec.Create, created (O_EXCL, so it never takes over a file someone
// else just made, and never truncates one). Devices are only ever opened.
func openOrCreate(spec Spec) (f *os.File, created bool, err error) {
	path := spec.Backing
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	switch {
	case err == nil:
		return f, false, nil
	case errors.Is(err, fs.ErrPermission):
		return nil, false, spec.errorf("cannot be opened for reading and writing by this user: %w", unwrapPath(err))
	case errors.Is(err, unix.EISDIR):
		return nil, false, spec.errorf("is a directory; backing must name a file or a device-dax device")
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, spec.errorf("open: %w", unwrapPath(err))
	}
	// Refuse before creating: nothing is left behind for a refusal.
	b, err := probeNew(spec, spec.hostOrReal())
	if err != nil {
		return nil, false, err
	}
	if err := finish(spec, b); err != nil {
		return nil, false, err
	}
	if err := spec.judge(b); err != nil {
		return nil, false, err
	}
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return f, true, nil
	}
	if errors.Is(err, fs.ErrExist) {
		// Someone made it meanwhile: use it as it is, like Create=false.
		if f, err = os.OpenFile(path, os.O_RDWR, 0); err == nil {
			return f, false, nil
		}
	}
	return nil, false, spec.errorf("create: %w", unwrapPath(err))
}

// unwrapPath drops the *fs.PathError layer (its path is already in our
// message) but keeps the errno for errors.Is.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// sizeNewFile gives a file pmem just created its size, and allocates its
// blocks where the filesystem can (hugetlbfs reserves its huge pages), so
// that running out of space shows up now rather than as SIGBUS in the guest
// later.
func sizeNewFile(f *os.File, spec Spec) error {
	fd := int(f.Fd())
	if err := unix.Ftruncate(fd, int64(spec.Size)); err != nil {
		return spec.errorf("ftruncate new file to %s: %w", memspec.FormatSize(spec.Size), err)
	}
	err := unix.Fallocate(fd, 0, 0, int64(spec.Size))
	switch {
	case err == nil, errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
		return nil
	case errors.Is(err, unix.ENOSPC):
		return spec.errorf("not enough space for %s on the file's filesystem (for hugetlbfs: free huge pages, see /proc/meminfo HugePages_Free); free some, or use a smaller size: %w", memspec.FormatSize(spec.Size), err)
	default:
		return spec.errorf("fallocate %s: %w", memspec.FormatSize(spec.Size), err)
	}
}

// checkSize refuses an existing file that is not exactly the configured
// size. pmem never resizes it: the file may hold a guest's RAM.
func checkSize(spec Spec, have uint64) error {
	want := spec.Size
	switch {
	case have < want:
		return spec.refuse(ErrSizeMismatch, "backing file is %s but the config says %s; pmvm never resizes an existing file: resize it yourself with truncate -s %s %s, or fix size in the config",
			memspec.FormatSize(have), memspec.FormatSize(want), memspec.FormatSize(want), spec.Backing)
	case have > want:
		return spec.refuse(ErrSizeMismatch, "backing file is %s, larger than the %s in the config; refusing to map only part of it: fix size in the config (size = %q) if the whole file is guest RAM, or shrink the file yourself (truncate -s %s %s) if the rest is not needed",
			memspec.FormatSize(have), memspec.FormatSize(want), memspec.FormatSize(have), memspec.FormatSize(want), spec.Backing)
	}
	return nil
}
