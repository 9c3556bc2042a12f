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

// Two device nodes for one device (a mknod alias) are two inodes, so a
// flock on each node would not conflict: the lock on a device is a file in
// the lock directory named by the device number, which every node of the
// device reaches. Here /dev/zero's numbers (mmap-able shared, like
// device-dax) are described by a fake sysfs as a device-dax instance and
// given two nodes; the second Open is refused, naming the first.
func TestLockRefusesDeviceAlias(t *testing.T) {
	zero := fileStat(t, "/dev/zero")
	maj, min := unix.Major(zero.Rdev), unix.Minor(zero.Rdev)
	dir := t.TempDir()
	nodeA, nodeB := filepath.Join(dir, "dax0.0"), filepath.Join(dir, "alias")
	for _, n := range []string{nodeA, nodeB} {
		if err := unix.Mknod(n, unix.S_IFCHR|0o600, int(zero.Rdev)); err != nil {
			t.Fatalf("mknod %s c %d %d: %v; this test needs CAP_MKNOD on a filesystem without nodev; the device-alias case is NOT covered", n, maj, min, err)
		}
	}
	require.NotEqual(t, fileStat(t, nodeA).Ino, fileStat(t, nodeB).Ino, "two nodes, two inodes")
	h := &host{sys: daxTree{maj: maj, min: min, size: "8388608", align: "2097152", uuid: testUUID, namespace: "namespace0.0"}.build(t),
		proc: "/proc", mountinfo: "/proc/self/mountinfo", locks: "/proc/locks"}
	lockDir := t.TempDir()
	spec := Spec{Name: "ram0", Size: 2 * mib, Backing: nodeA, Shared: true, Mode: memspec.ModeReboot, VM: "first", LockDir: lockDir, host: h}

	a, err := Open(spec)
	require.NoError(t, err)
	require.Equal(t, KindDevDax, a.Kind)
	lockFile := filepath.Join(lockDir, fmt.Sprintf("chr-%d-%d.lock", maj, min))
	require.FileExists(t, lockFile)

	alias := spec
	alias.Backing, alias.VM = nodeB, "second"
	b, err := Open(alias)
	if b != nil {
		b.Close()
	}
	require.ErrorIs(t, err, ErrInUse, "a second node of the same device must not map the memory again")
	require.ErrorContains(t, err, fmt.Sprintf(`memory block "ram0" (%s): is in use by pid %d (pmvm, vm "first", block "ram0")`, nodeB, os.Getpid()))

	// The lock follows the device, not the lock file's record: without a
	// record the refusal still names the pid from /proc/locks.
	require.NoError(t, os.Truncate(lockFile, 0))
	_, err = Open(alias)
	require.ErrorIs(t, err, ErrInUse)
	require.ErrorContains(t, err, fmt.Sprintf("is in use by pid %d (pmem.test)", os.Getpid()))

	require.NoError(t, a.Close())
	b, err = Open(alias)
	require.NoError(t, err, "free once the first region is closed")
	require.Contains(t, readRecord(lockFile).raw, `vm=second`)
	require.NoError(t, b.Close())
}
