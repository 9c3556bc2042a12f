package pmem

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

const protRW = unix.PROT_READ | unix.PROT_WRITE

func openAnonymous(spec Spec) (*Region, error) {
	flags := unix.MAP_ANONYMOUS | unix.MAP_NORESERVE
	if spec.Shared {
		flags |= unix.MAP_SHARED
	} else {
		flags |= unix.MAP_PRIVATE
	}
	mem, addr, err := mapAligned(-1, spec.Size, DefaultAlign, protRW, flags)
	if err != nil {
		return nil, spec.errorf("mmap %s: %w", formatSize(spec.Size), err)
	}
	return &Region{Name: spec.Name, Kind: KindAnonymous, Size: spec.Size, Align: DefaultAlign, Mem: mem, addr: addr}, nil
}

func openMemfd(spec Spec) (*Region, error) {
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
		return nil, spec.errorf("ftruncate to %s: %w", formatSize(spec.Size), err)
	}
	return mapFile(spec, KindMemfd, f)
}

func openFile(spec Spec) (*Region, error) {
	path := spec.Backing
	f, created, err := openOrCreate(spec)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Region, error) {
		f.Close()
		if created {
			// The file is ours and holds nothing yet: leave no half-made
			// backing behind, so that a retry starts clean.
			_ = os.Remove(path)
		}
		return nil, err
	}

	fi, err := f.Stat()
	if err != nil {
		return fail(spec.errorf("stat: %w", err))
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
	case m&fs.ModeCharDevice != 0:
		return fail(spec.errorf("is a character device; device backings (device-dax) are not supported yet"))
	case m.IsDir():
		return fail(spec.errorf("is a directory; backing must name a file"))
	default:
		return fail(spec.errorf("is not a regular file (mode %s)", m))
	}

	if created {
		if err := sizeNewFile(f, spec); err != nil {
			return fail(err)
		}
	} else if err := checkSize(spec, uint64(fi.Size())); err != nil {
		return fail(err)
	}
	r, err := mapFile(spec, KindFile, f)
	if err != nil {
		if created {
			_ = os.Remove(path)
		}
		return nil, err
	}
	r.Path = path
	return r, nil
}

// openOrCreate opens the backing file read-write. With spec.Create it
// creates a missing file (O_EXCL, so it never takes over a file someone else
// just made, and never truncates one).
func openOrCreate(spec Spec) (f *os.File, created bool, err error) {
	path := spec.Backing
	if spec.Create {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			return f, true, nil
		}
		if dir := filepath.Dir(path); errors.Is(err, fs.ErrNotExist) && !exists(dir) {
			return nil, false, spec.refuse(err, "cannot create the file: directory %s does not exist", dir)
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, false, spec.errorf("create: %w", unwrapPath(err))
		}
		// It exists: use it as it is, like Create=false.
	}
	f, err = os.OpenFile(path, os.O_RDWR, 0)
	switch {
	case err == nil:
		return f, false, nil
	case errors.Is(err, fs.ErrNotExist) && !spec.Create:
		return nil, false, spec.refuse(err, "backing file does not exist; set create = true in the config to create it, or create it yourself (truncate -s %s %s)",
			formatSize(spec.Size), path)
	default:
		return nil, false, spec.errorf("open: %w", unwrapPath(err))
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
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
// blocks where the filesystem can, so that running out of space shows up
// now rather than as SIGBUS in the guest later.
func sizeNewFile(f *os.File, spec Spec) error {
	fd := int(f.Fd())
	if err := unix.Ftruncate(fd, int64(spec.Size)); err != nil {
		return spec.errorf("ftruncate new file to %s: %w", formatSize(spec.Size), err)
	}
	err := unix.Fallocate(fd, 0, 0, int64(spec.Size))
	switch {
	case err == nil, errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
		return nil
	case errors.Is(err, unix.ENOSPC):
		return spec.errorf("not enough space for %s on the file's filesystem; free some, or use a smaller size: %w", formatSize(spec.Size), err)
	default:
		return spec.errorf("fallocate %s: %w", formatSize(spec.Size), err)
	}
}

// checkSize refuses an existing file that is not exactly the configured
// size. pmem never resizes it: the file may hold a guest's RAM.
func checkSize(spec Spec, have uint64) error {
	want := spec.Size
	switch {
	case have < want:
		return spec.refuse(ErrSizeMismatch, "backing file is %s but the config says %s; pmvm never resizes an existing file: resize it yourself with truncate -s %s %s, or fix size in the config",
			formatSize(have), formatSize(want), formatSize(want), spec.Backing)
	case have > want:
		return spec.refuse(ErrSizeMismatch, "backing file is %s, larger than the %s in the config; refusing to map only part of it: fix size in the config (size = %q) if the whole file is guest RAM, or shrink the file yourself (truncate -s %s %s) if the rest is not needed",
			formatSize(have), formatSize(want), formatSize(have), formatSize(want), spec.Backing)
	}
	return nil
}

// mapFile maps f shared and read-write into a Region that takes ownership of
// f; on error f is closed.
func mapFile(spec Spec, kind Kind, f *os.File) (*Region, error) {
	mem, addr, err := mapAligned(int(f.Fd()), spec.Size, DefaultAlign, protRW, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, spec.errorf("mmap %s shared: %w", formatSize(spec.Size), err)
	}
	return &Region{Name: spec.Name, Kind: kind, Size: spec.Size, Align: DefaultAlign, Mem: mem, addr: addr, file: f}, nil
}
