package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccompData is struct seccomp_data as a filter reads it. The kernel's
// loads are native-endian and x/net/bpf's interpreter loads big-endian, so
// each 32-bit word the filter loads is written big-endian here (args[0]'s
// low half, which is at offsetArg0 on little-endian x86-64).
func seccompData(arch uint32, nr uint32, arg0 uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[offsetNR:], nr)
	binary.BigEndian.PutUint32(b[offsetArch:], arch)
	binary.BigEndian.PutUint32(b[offsetArg0:], uint32(arg0))
	return b
}

// TestProgramVerdicts runs the filter in x/net/bpf's interpreter over the
// calls that matter: what a running VM needs passes; exec, fork, ptrace,
// mount, module loading and kexec are refused with EPERM; clone passes only
// for a thread and clone3 gets ENOSYS; the i386 ABI kills; x32 numbers are
// refused.
func TestProgramVerdicts(t *testing.T) {
	raw, err := Program(Allowed)
	require.NoError(t, err)
	insts, ok := bpf.Disassemble(raw)
	require.True(t, ok, "the program disassembles")
	vm, err := bpf.NewVM(insts)
	require.NoError(t, err)
	const (
		allow  = unix.SECCOMP_RET_ALLOW
		eperm  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		kill   = unix.SECCOMP_RET_KILL_PROCESS
		enosys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	)
	threadFlags := uint64(unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_SYSVSEM | unix.CLONE_THREAD)
	for _, tc := range []struct {
		name string
		arch uint32
		nr   uintptr
		arg0 uint64
		want uint32
	}{
		{"KVM_RUN and other ioctls", unix.AUDIT_ARCH_X86_64, unix.SYS_IOCTL, 0, allow},
		{"futex", unix.AUDIT_ARCH_X86_64, unix.SYS_FUTEX, 0, allow},
		{"the state file's rename", unix.AUDIT_ARCH_X86_64, unix.SYS_RENAMEAT, 0, allow},
		{"the last allowed call", unix.AUDIT_ARCH_X86_64, Allowed[len(Allowed)-1], 0, allow},
		{"a Go runtime thread", unix.AUDIT_ARCH_X86_64, unix.SYS_CLONE, threadFlags, allow},
		{"fork", unix.AUDIT_ARCH_X86_64, unix.SYS_CLONE, uint64(syscall.SIGCHLD), eperm},
		{"clone3 (its flags are out of reach: glibc falls back to clone)", unix.AUDIT_ARCH_X86_64, unix.SYS_CLONE3, 0, enosys},
		{"execve", unix.AUDIT_ARCH_X86_64, unix.SYS_EXECVE, 0, eperm},
		{"ptrace", unix.AUDIT_ARCH_X86_64, unix.SYS_PTRACE, 0, eperm},
		{"mount", unix.AUDIT_ARCH_X86_64, unix.SYS_MOUNT, 0, eperm},
		{"finit_module", unix.AUDIT_ARCH_X86_64, unix.SYS_FINIT_MODULE, 0, eperm},
		{"kexec_file_load", unix.AUDIT_ARCH_X86_64, unix.SYS_KEXEC_FILE_LOAD, 0, eperm},
		{"an x32 ioctl", unix.AUDIT_ARCH_X86_64, x32Bit | unix.SYS_IOCTL, 0, eperm},
		{"an i386 call", unix.AUDIT_ARCH_I386, 1, 0, kill},
	} {
		got, err := vm.Run(seccompData(tc.arch, uint32(tc.nr), tc.arg0))
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, uint32(got), "%s: got %#x", tc.name, got)
	}
}

// childEnv makes the test binary a child that installs the filter and
// exercises what a running pmvm does (childMain).
const childEnv = "PMVM_SECCOMP_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(childMain(mode))
	}
	os.Exit(m.Run())
}

// childMain runs in a child process: it installs the filter, then does
// what a running pmvm does (threads, GC, a unix socket served and dialled,
// a state file written durably and renamed, a directory read) and what it
// never does (exec, fork), printing one verdict line per step.
func childMain(mode string) int {
	if mode == "bench" {
		return childBench()
	}
	took, err := Install()
	if err != nil {
		fmt.Println("install:", err)
		return 1
	}
	fmt.Println("installed in", took)
	fail := 0
	step := func(name string, err error) {
		if err != nil {
			fail = 1
		}
		fmt.Printf("%s: %v\n", name, err)
	}
	dir := os.Args[len(os.Args)-1]

	var wg sync.WaitGroup
	for i := 0; i < 64; i++ { // new OS threads under the filter
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			_ = make([]byte, 1<<20)
			time.Sleep(time.Millisecond)
		}()
	}
	wg.Wait()
	runtime.GC()
	step("threads and GC", nil)

	sock := filepath.Join(dir, "control.sock")
	l, err := net.Listen("unix", sock)
	step("listen", err)
	if err == nil {
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Write([]byte("ok\n"))
				c.Close()
			}
		}()
		c, err := net.Dial("unix", sock)
		if err == nil {
			buf := make([]byte, 3)
			_, err = c.Read(buf)
			c.Close()
		}
		step("dial and read", err)
		l.Close()
	}

	tmp := filepath.Join(dir, ".vm.state.tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err == nil {
		_, err = f.Write([]byte("state"))
		err = errors.Join(err, f.Sync(), f.Close(), os.Rename(tmp, filepath.Join(dir, "vm.state")))
	}
	step("state file written and renamed", err)
	d, err := os.Open(dir)
	if err == nil {
		_, err = d.Readdirnames(-1)
		err = errors.Join(err, d.Sync(), d.Close())
	}
	step("state_dir read and synced", err)

	err = exec.Command("/bin/true").Run()
	fmt.Printf("exec refused: %v\n", err)
	if !errors.Is(err, unix.EPERM) {
		fail = 1
	}
	_, err = syscall.ForkExec("/bin/true", []string{"true"}, nil)
	fmt.Printf("fork refused: %v\n", err)
	if !errors.Is(err, unix.EPERM) {
		fail = 1
	}
	return fail
}

// TestFilteredProcessRunsAndIsConfined proves, in a child process that
// installs the filter for real (TSYNC over threads that already exist),
// that what a running pmvm does still works and exec and fork are refused
// with EPERM rather than killing it.
func TestFilteredProcessRunsAndIsConfined(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$", t.TempDir())
	cmd.Env = append(os.Environ(), childEnv+"=run")
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	require.NoError(t, err, "the filtered child failed a step (see its lines)")
	for _, want := range []string{"installed in", "threads and GC: <nil>", "listen: <nil>", "dial and read: <nil>",
		"state file written and renamed: <nil>", "state_dir read and synced: <nil>",
		"exec refused: fork/exec /bin/true: operation not permitted", "fork refused: operation not permitted"} {
		assert.Contains(t, string(out), want)
	}
}

// childBench times a cheap system call before and after the filter, and
// the installation.
func childBench() int {
	n, _ := strconv.Atoi(os.Getenv("PMVM_SECCOMP_BENCH_N"))
	per := func() float64 {
		start := time.Now()
		for i := 0; i < n; i++ {
			unix.Getppid()
		}
		return float64(time.Since(start).Nanoseconds()) / float64(n)
	}
	before := per()
	took, err := Install()
	if err != nil {
		fmt.Println("install:", err)
		return 1
	}
	after := per()
	fmt.Printf("install-us %.1f\nsyscall-ns-before %.1f\nsyscall-ns-after %.1f\n", float64(took.Nanoseconds())/1e3, before, after)
	return 0
}

// BenchmarkFilter reports what the filter costs a resume: its installation
// (once per pmvm run, before the guest runs) and the extra time of each
// system call under it, measured in a child process that installs it.
func BenchmarkFilter(b *testing.B) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=bench", "PMVM_SECCOMP_BENCH_N="+strconv.Itoa(max(b.N, 100000)))
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("child: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var name string
		var v float64
		if _, err := fmt.Sscanf(line, "%s %g", &name, &v); err == nil {
			b.ReportMetric(v, name)
		}
	}
}
