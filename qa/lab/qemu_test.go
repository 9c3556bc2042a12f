package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeQEMU writes a shell script standing in for qemu-system-x86_64.
func fakeQEMU(t *testing.T, body string) QEMU {
	p := filepath.Join(t.TempDir(), "fake-qemu")
	require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755))
	return QEMU{Name: "fake", Binary: p, LogDir: t.TempDir()}
}

func testLab(t *testing.T) *Lab {
	return &Lab{Cache: t.TempDir(), Logf: t.Logf}
}

func TestRunnerWaitForInOrderAndExit(t *testing.T) {
	q := fakeQEMU(t, `printf '\033c\033[2Jboot\r\nA=1\nB=2\nA=3\n'; echo oops >&2; exit 0`)
	var echoed []string
	q.Echo = func(s string) { echoed = append(echoed, s) }
	vm, err := testLab(t).Start(q)
	require.NoError(t, err)
	t.Cleanup(vm.Kill)
	m, err := vm.WaitFor(regexp.MustCompile(`A=(\d)`), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "1", m[1])
	_, err = vm.WaitFor(regexp.MustCompile(`B=2`), 5*time.Second)
	require.NoError(t, err)
	m, err = vm.WaitFor(regexp.MustCompile(`A=(\d)`), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "3", m[1]) // consumed in order: A=1 is not matched again
	require.NoError(t, vm.Wait(5*time.Second))
	_, err = vm.WaitFor(regexp.MustCompile(`never`), 5*time.Second)
	require.ErrorContains(t, err, "QEMU exited")
	require.Contains(t, vm.Lines(), "boot") // escape sequences and \r stripped
	require.Contains(t, vm.Lines(), "qemu stderr: oops")
	log, err := os.ReadFile(vm.LogPath)
	require.NoError(t, err)
	require.Contains(t, string(log), "A=3\n")
}

func TestRunnerOverallTimeoutKillsProcessGroup(t *testing.T) {
	// The fake forks a child that would outlive a kill of the parent alone.
	q := fakeQEMU(t, `for i in $(seq 1 100); do echo "line $i"; done; sleep 1000 & echo "child $!"; wait`)
	q.Timeout = time.Second
	vm, err := testLab(t).Start(q)
	require.NoError(t, err)
	t.Cleanup(vm.Kill)
	m, err := vm.WaitFor(regexp.MustCompile(`child (\d+)`), 5*time.Second)
	require.NoError(t, err)
	start := time.Now()
	_, err = vm.WaitFor(regexp.MustCompile(`never`), time.Minute)
	require.Less(t, time.Since(start), 10*time.Second)
	require.ErrorContains(t, err, "overall timeout")
	require.ErrorContains(t, err, "line 100")
	require.NotContains(t, err.Error(), "line 60\n") // only the last 40 lines
	require.Error(t, vm.Wait(time.Second))
	var pid int
	for _, c := range m[1] {
		pid = pid*10 + int(c-'0')
	}
	time.Sleep(100 * time.Millisecond)
	// Gone, or a zombie waiting for init to reap it.
	if err := syscall.Kill(pid, 0); err == nil {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		f := strings.Fields(string(st))
		require.True(t, len(f) > 2 && (f[2] == "Z" || f[2] == "X"), "child of the fake QEMU survived: %s", st)
	}
}

func TestRunnerFailOnAndWaitTimeout(t *testing.T) {
	q := fakeQEMU(t, `echo start; sleep 1; echo "PMVM-LAB ERROR: insmod kvm.ko"; sleep 1000`)
	vm, err := testLab(t).Start(q)
	require.NoError(t, err)
	t.Cleanup(vm.Kill)
	_, err = vm.WaitFor(regexp.MustCompile(`start`), 5*time.Second)
	require.NoError(t, err)
	_, err = vm.WaitFor(regexp.MustCompile(`nothing`), 100*time.Millisecond)
	require.ErrorContains(t, err, "no match within")
	_, err = vm.WaitFor(regexp.MustCompile(`kvm-ready`), time.Minute)
	require.ErrorContains(t, err, "PMVM-LAB ERROR: insmod kvm.ko")
	require.True(t, strings.Contains(err.Error(), "start"))
	vm.Kill()
	require.True(t, vm.Exited())
}

func TestMissingQEMU(t *testing.T) {
	_, err := testLab(t).Start(QEMU{Binary: "/nonexistent/qemu-system-x86_64"})
	require.ErrorIs(t, err, ErrNoQEMU)
	require.ErrorContains(t, err, QEMUPackage)
}
