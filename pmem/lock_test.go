package pmem

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// Environment of the lock-holder helper process.
const (
	envHelper  = "PMEM_TEST_LOCK_HOLDER" // the backing path
	envLockDir = "PMEM_TEST_LOCK_DIR"
)

// TestHelperLockHolder is not a test: it is the second pmvm of the lock
// tests, run as a child process (the test binary re-executed with
// -test.run=TestHelperLockHolder). It opens the backing named in its
// environment, prints "LOCKED <pid>", and holds it until its stdin closes.
func TestHelperLockHolder(t *testing.T) {
	path := os.Getenv(envHelper)
	if path == "" {
		return // run directly: nothing to do
	}
	r, err := Open(Spec{Name: "ram0", Size: 2 * mib, Backing: path, Shared: true, Mode: memspec.ModeRestart,
		VM: "holder-vm", LockDir: os.Getenv(envLockDir)})
	if err != nil {
		fmt.Printf("ERROR %v\n", err)
		os.Exit(3)
	}
	fmt.Printf("LOCKED %d\n", os.Getpid())
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := r.Close(); err != nil {
		fmt.Printf("ERROR close: %v\n", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// holder is a running helper process holding a backing.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	pid   int
}

func startHolder(t *testing.T, path, lockDir string) *holder {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperLockHolder$")
	cmd.Env = append(os.Environ(), envHelper+"="+path, envLockDir+"="+lockDir)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	h := &holder{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			require.True(t, ok, "helper exited before locking")
			if pid, found := strings.CutPrefix(line, "LOCKED "); found {
				h.pid, err = strconv.Atoi(pid)
				require.NoError(t, err)
				go func() { // drain the rest
					for range lines {
					}
				}()
				return h
			}
			require.False(t, strings.HasPrefix(line, "ERROR"), "helper: %s", line)
		case <-timeout:
			t.Fatal("helper did not lock the backing within 30s")
		}
	}
}

// stop makes the helper close its region and exit.
func (h *holder) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, h.stdin.Close())
	require.NoError(t, h.cmd.Wait())
}

// A second process opening memory that another holds is refused, and the
// error names the holder's pid, VM and block. After the holder exits, the
// memory is free again and the record names the new holder.
func TestLockRefusesSecondProcess(t *testing.T) {
	dir := mountFS(t, "tmpfs", "size=16m,mode=0700")
	path := filepath.Join(dir, "ram0")
	writeFile(t, path, 2*mib)
	lockDir := t.TempDir()
	spec := Spec{Name: "ram0", Size: 2 * mib, Backing: path, Shared: true, Mode: memspec.ModeRestart, VM: "second", LockDir: lockDir}

	h := startHolder(t, path, lockDir)
	require.NotEqual(t, os.Getpid(), h.pid)

	r, err := Open(spec)
	require.Nil(t, r)
	require.ErrorIs(t, err, ErrInUse)
	require.ErrorContains(t, err, fmt.Sprintf(`memory block "ram0" (%s): is in use by pid %d (pmvm, vm "holder-vm", block "ram0"); two VMs must never map the same guest memory`, path, h.pid))

	// pmvm check says so too, without failing the block.
	rep, err := Check(spec)
	require.NoError(t, err)
	require.Contains(t, strings.Join(rep.Blocks[0].Notes, "; "), fmt.Sprintf("in use by pid %d", h.pid))

	// Without pmvm's record, /proc/locks still names the pid.
	st := fileStat(t, path)
	record := filepath.Join(lockDir, fmt.Sprintf("%d-%d-%d.lock", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino))
	require.FileExists(t, record)
	require.Contains(t, readRecord(record).raw, "vm=holder-vm")
	require.NoError(t, os.Remove(record))
	_, err = Open(spec)
	require.ErrorIs(t, err, ErrInUse)
	require.ErrorContains(t, err, fmt.Sprintf("is in use by pid %d (pmem.test)", h.pid))

	h.stop(t)
	r, err = Open(spec)
	require.NoError(t, err, "free once the holder is gone")
	rec := readRecord(record)
	require.Equal(t, os.Getpid(), rec.pid)
	require.Equal(t, "second", rec.vm)
	require.NoError(t, r.Close())
	require.NoFileExists(t, record, "Close removes the record")
}

// Two Regions of one process on the same file are refused too (a config
// cannot map one file twice), naming this process.
func TestLockRefusesSameProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram0")
	spec := Spec{Name: "ram0", Size: 2 * mib, Backing: path, Shared: true, Create: true, VM: "one"}
	r, err := Open(spec)
	require.NoError(t, err)
	defer r.Close()
	spec.Name = "ram1"
	_, err = Open(spec)
	require.ErrorIs(t, err, ErrInUse)
	require.ErrorContains(t, err, fmt.Sprintf(`is in use by pid %d (pmvm, vm "one", block "ram0")`, os.Getpid()))
	require.FileExists(t, path, "the refused Open did not remove the file the first one created")
}

func TestFlockHolders(t *testing.T) {
	locks := filepath.Join(t.TempDir(), "locks")
	require.NoError(t, os.WriteFile(locks, []byte(
		"1: POSIX  ADVISORY  WRITE 100 00:06:3 0 EOF\n"+
			"2: FLOCK  ADVISORY  WRITE 200 00:06:3 0 EOF\n"+
			"2: -> FLOCK  ADVISORY  WRITE 300 00:06:3 0 EOF\n"+
			"3: FLOCK  ADVISORY  WRITE 400 103:00:77 0 EOF\n"), 0o644))
	require.Equal(t, []int{200}, flockHolders(locks, unix.Mkdev(0, 6), 3))
	require.Equal(t, []int{400}, flockHolders(locks, unix.Mkdev(259, 0), 77), "major 259 is 103 in hex")
	require.Empty(t, flockHolders(locks, unix.Mkdev(0, 6), 4))
}
