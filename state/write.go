package state

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// testHookBeforeRename, when set by a test, runs after the temporary file is
// written and synced and before it is renamed over the target. An error (or
// a panic) simulates a crash at the last moment before the switch.
var testHookBeforeRename func(tmp string) error

// WriteFile writes f to path atomically and durably: it encodes f, writes a
// temporary file in the same directory (created with O_EXCL, mode 0600),
// fsyncs it, renames it over path and fsyncs the directory. A crash at any
// moment leaves either the previous file or the new one at path, never a
// mix; on an error the temporary file is removed and path is untouched.
// If path is a symbolic link, the link itself is replaced.
//
// A crash (SIGKILL, power loss) between creating and renaming the temporary
// file leaves it behind as ".NAME.tmp-*" next to path; it is never read.
func WriteFile(path string, f *File) error {
	b, err := f.Encode()
	if err != nil {
		return err
	}
	return writeDurable(path, "state file", b)
}

// WriteFileDurable writes data to path as WriteFile writes a state file:
// atomically (temporary file, fsync, rename), durably (directory fsync),
// mode 0600. For pmvm's other files that must survive a crash or a kexec
// (the host update timeline).
func WriteFileDurable(path string, data []byte) error {
	return writeDurable(path, "file", data)
}

// writeDurable is WriteFile's and WriteFileDurable's write; what names the
// file in errors.
func writeDurable(path, what string, b []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*") // O_RDWR|O_CREATE|O_EXCL, 0600
	if err != nil {
		return fmt.Errorf("writing %s %s: %w", what, path, err)
	}
	tmpName := tmp.Name()
	renamed := false
	defer func() {
		// Runs on errors and on panics (a test hook's simulated crash).
		if !renamed {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	// Make the mode exactly 0600 whatever the umask: pmvm's files hold
	// guest device state or host update records, for pmvm (root) alone.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("writing %s %s: %w", what, path, err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("writing %s %s: %w", what, path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s %s: fsync: %w", what, path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s %s: %w", what, path, err)
	}
	if testHookBeforeRename != nil {
		if err := testHookBeforeRename(tmpName); err != nil {
			return fmt.Errorf("writing %s %s: %w", what, path, err)
		}
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("writing %s %s: %w", what, path, err)
	}
	renamed = true
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("%s %s was written but the rename may not survive a crash: fsync of %s: %w", what, path, dir, err)
	}
	return nil
}

// SyncDir makes a rename in dir durable. Filesystems that cannot fsync a
// directory (EINVAL, ENOTSUP) make renames durable by other means.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return err
	}
	return nil
}

// ReadFile reads and decodes the state file at path under DefaultLimit.
func ReadFile(path string) (*File, error) {
	return ReadFileLimit(path, DefaultLimit)
}

// ReadFileLimit reads and decodes the state file at path, refusing a file
// over limit bytes (DefaultLimit if limit <= 0) from its size alone, before
// reading or allocating. Refusals are *Error values carrying the path.
func ReadFileLimit(path string, limit int64) (*File, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	// Judge the type before opening, and open non-blocking: opening a
	// named pipe for reading waits for a writer (a FIFO at a state path
	// would hang pmvm host restore at boot), and opening some devices acts.
	// The type is checked again on the descriptor, which is what is read.
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		return nil, errNotRegular(path, st.Mode())
	}
	fd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("reading state file: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading state file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, errNotRegular(path, st.Mode())
	}
	if st.Size() > limit {
		e := errTooLarge("it is", uint64(st.Size()), uint64(limit))
		e.Path = path
		return nil, e
	}
	// Read one byte more than the stat said, so a file that grew since is
	// noticed (and refused by Decode against the cap or its own length).
	b := make([]byte, st.Size()+1)
	n, err := io.ReadFull(fd, b)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Errorf("reading state file %s: %w", path, err)
	}
	f, err := Decode(b[:n], limit)
	if err != nil {
		var se *Error
		if errors.As(err, &se) {
			se.Path = path
		}
		return nil, err
	}
	return f, nil
}

// errNotRegular refuses what is not a regular file, saying what it is.
func errNotRegular(path string, m os.FileMode) *Error {
	return &Error{Kind: ErrNotStateFile, Path: path,
		Msg: fmt.Sprintf("this is not a pmvm state file (it is a %s, not a regular file): check the path", fileType(m))}
}

func fileType(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&os.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeCharDevice != 0:
		return "character device"
	case m&os.ModeDevice != 0:
		return "block device"
	case m&os.ModeSymlink != 0:
		return "symbolic link"
	}
	return "file of mode " + m.Type().String()
}
