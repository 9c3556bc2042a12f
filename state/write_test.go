package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// dirEntries lists the names in dir.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func namedFile(t *testing.T, name string) *File {
	f := sampleFile(t)
	f.Header.VMName = name
	return f
}

// TestWriteFileOverwrite proves WriteFile creates, then replaces, a state
// file that ReadFile reads back; the result is mode 0600 even over a 0644
// file and under a permissive umask, and no temporary file stays behind.
func TestWriteFileOverwrite(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "demo.pmvmstate")

	require.NoError(t, WriteFile(path, namedFile(t, "first")))
	got, err := ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "first", got.Header.VMName)

	require.NoError(t, os.Chmod(path, 0o644))
	require.NoError(t, WriteFile(path, namedFile(t, "second")))
	got, err = ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, withFormat(namedFile(t, "second")), got)

	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	assert.Equal(t, []string{"demo.pmvmstate"}, dirEntries(t, dir))
}

// TestWriteFileRelativePath proves a bare file name is written in the
// current directory (the directory fsync uses ".").
func TestWriteFileRelativePath(t *testing.T) {
	t.Chdir(t.TempDir())
	require.NoError(t, WriteFile("rel.pmvmstate", sampleFile(t)))
	_, err := ReadFile("rel.pmvmstate")
	require.NoError(t, err)
}

// TestWriteFileCrashBeforeRename simulates a crash at the last moment
// before the switch (an error, then a panic, from the hook) and proves the
// previous file is byte-for-byte intact and the temporary file is gone. The
// hook also proves the temporary file was complete, synced and 0600 before
// the rename would have happened.
func TestWriteFileCrashBeforeRename(t *testing.T) {
	for _, how := range []string{"error", "panic"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "demo.pmvmstate")
			require.NoError(t, WriteFile(path, namedFile(t, "old")))
			before, err := os.ReadFile(path)
			require.NoError(t, err)

			var sawTemp bool
			testHookBeforeRename = func(tmp string) error {
				sawTemp = true
				assert.Equal(t, dir, filepath.Dir(tmp), "temp file in the target's directory")
				assert.True(t, strings.HasPrefix(filepath.Base(tmp), ".demo.pmvmstate.tmp-"))
				st, err := os.Stat(tmp)
				require.NoError(t, err)
				assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
				f, err := ReadFile(tmp)
				require.NoError(t, err, "temp file complete before rename")
				assert.Equal(t, "new", f.Header.VMName)
				if how == "panic" {
					panic("simulated crash")
				}
				return errors.New("simulated crash")
			}
			defer func() { testHookBeforeRename = nil }()

			func() {
				defer func() {
					r := recover()
					if how == "panic" {
						assert.Equal(t, "simulated crash", r)
					}
				}()
				err = WriteFile(path, namedFile(t, "new"))
			}()
			require.True(t, sawTemp)
			if how == "error" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "simulated crash")
			}
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, before, after, "previous file intact")
			assert.Equal(t, []string{"demo.pmvmstate"}, dirEntries(t, dir), "no temp file left")
		})
	}
}

// TestWriteFileRefusalTouchesNothing proves an unencodable file is refused
// before anything is created, and a missing directory is a plain error.
func TestWriteFileRefusalTouchesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "demo.pmvmstate")
	require.NoError(t, WriteFile(path, namedFile(t, "old")))
	bad := sampleFile(t)
	bad.Header.Mode = ""
	require.ErrorIs(t, WriteFile(path, bad), ErrInvalidHeader)
	got, err := ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "old", got.Header.VMName)
	assert.Equal(t, []string{"demo.pmvmstate"}, dirEntries(t, dir))

	err = WriteFile(filepath.Join(dir, "missing", "x.pmvmstate"), sampleFile(t))
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// TestReadFileRefusesOversizeBeforeReading proves ReadFile refuses a file
// over the cap from its size alone: a sparse 1 TiB file costs no read and
// no allocation of its size.
func TestReadFileRefusesOversizeBeforeReading(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge.pmvmstate")
	fd, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, fd.Truncate(1<<40))
	require.NoError(t, fd.Close())

	var rerr error
	n := bytesAllocated(func() { _, rerr = ReadFile(path) })
	require.ErrorIs(t, rerr, ErrTooLarge)
	assert.Contains(t, rerr.Error(), path+": state file is too large (it is 1099511627776 bytes, over the 67108864-byte cap")
	assert.Less(t, n, uint64(64<<10))

	small := filepath.Join(t.TempDir(), "small.pmvmstate")
	require.NoError(t, WriteFile(small, sampleFile(t)))
	_, err = ReadFileLimit(small, 100)
	require.ErrorIs(t, err, ErrTooLarge)
	assert.Contains(t, err.Error(), "over the 100-byte cap")
}

// TestReadFileRefusals proves ReadFile's refusals name the file and keep
// their kind: a corrupt file, a truncated one, a directory, a missing path.
func TestReadFileRefusals(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "demo.pmvmstate")
	require.NoError(t, WriteFile(path, sampleFile(t)))
	b, err := os.ReadFile(path)
	require.NoError(t, err)

	b[len(b)/2] ^= 4
	require.NoError(t, os.WriteFile(path, b, 0o600))
	_, err = ReadFile(path)
	require.ErrorIs(t, err, ErrChecksum)
	assert.True(t, strings.HasPrefix(err.Error(), path+": state file is corrupt (checksum mismatch"), err.Error())

	require.NoError(t, os.WriteFile(path, b[:100], 0o600))
	_, err = ReadFile(path)
	require.ErrorIs(t, err, ErrTruncated)
	assert.Contains(t, err.Error(), path+": state file is truncated (100 bytes; its header says")

	_, err = ReadFile(dir)
	require.ErrorIs(t, err, ErrNotStateFile)
	assert.Contains(t, err.Error(), "not a regular file")

	_, err = ReadFile(filepath.Join(dir, "nope"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestReadFileRefusesFIFO proves a named pipe at a state path is refused at
// once, by its type, instead of blocking the reader (pmvm host restore at
// boot) until something writes into it. Character devices likewise.
func TestReadFileRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "demo.state")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	link := filepath.Join(dir, "link.state")
	require.NoError(t, os.Symlink(fifo, link))
	for _, path := range []string{fifo, link, "/dev/zero"} {
		done := make(chan error, 1)
		go func() {
			_, err := ReadFile(path)
			done <- err
		}()
		select {
		case err := <-done:
			require.ErrorIs(t, err, ErrNotStateFile, path)
			assert.Contains(t, err.Error(), path+": this is not a pmvm state file (it is a ")
			if path != "/dev/zero" {
				assert.Contains(t, err.Error(), "it is a named pipe (FIFO), not a regular file")
			}
		case <-time.After(5 * time.Second):
			// Unblock the reader so the test can end.
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
			t.Fatalf("ReadFile(%s) blocked on a FIFO", path)
		}
	}
}
