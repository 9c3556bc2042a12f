package pmem

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pmvm/pmvm/qa/labrun"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestMain runs the tests where 2 MiB and 1 GiB huge pages exist: this
// machine, else a lab host.
func TestMain(m *testing.M) {
	labrun.Main(withLockDir{m}, labrun.HugePages2M, labrun.HugePages1G)
}

// withLockDir keeps the tests' lock records out of /run/pmvm/locks.
type withLockDir struct{ m *testing.M }

func (w withLockDir) Run() int {
	dir, err := os.MkdirTemp("", "pmem-locks-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pmem tests: lock dir:", err)
		return 1
	}
	lockDirDefault = dir
	defer os.RemoveAll(dir)
	return w.m.Run()
}

// mountFS mounts a filesystem of type fstype on a new temporary directory
// and unmounts it when the test ends. These tests need root (CAP_SYS_ADMIN):
// without it they fail, saying so.
func mountFS(t *testing.T, fstype, data string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount(fstype, dir, fstype, 0, data); err != nil {
		t.Fatalf("mount -t %s -o %s %s: %v; this test mounts its own %s and needs root (CAP_SYS_ADMIN); the %s case is NOT covered",
			fstype, data, dir, err, fstype, fstype)
	}
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v (detaching it)", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

const hugepages2M = "/sys/kernel/mm/hugepages/hugepages-2048kB"

// reserveHugePages makes sure at least n free 2 MiB huge pages exist,
// raising nr_hugepages if needed and restoring it when the test ends. A
// kernel that refuses fails the test with the reason.
func reserveHugePages(t *testing.T, n int) {
	t.Helper()
	readInt := func(name string) int {
		b, err := os.ReadFile(filepath.Join(hugepages2M, name))
		require.NoError(t, err, "this kernel has no 2MiB huge pages (CONFIG_HUGETLBFS); the hugetlbfs case is NOT covered")
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		require.NoError(t, err)
		return v
	}
	nr, free := readInt("nr_hugepages"), readInt("free_hugepages")
	if free >= n {
		return
	}
	want := nr + n - free
	path := filepath.Join(hugepages2M, "nr_hugepages")
	if err := os.WriteFile(path, []byte(strconv.Itoa(want)), 0); err != nil {
		t.Fatalf("cannot reserve %d huge pages (echo %d > %s): %v; the hugetlbfs case is NOT covered", n, want, path, err)
	}
	// Registered before any mount, so it runs after the unmount.
	t.Cleanup(func() {
		if err := os.WriteFile(path, []byte(strconv.Itoa(nr)), 0); err != nil {
			t.Errorf("restore %s to %d: %v", path, nr, err)
		}
	})
	if got := readInt("free_hugepages"); got < n {
		t.Fatalf("asked the kernel for %d huge pages (nr_hugepages %d -> %d) but only %d are free (memory too fragmented?); the hugetlbfs case is NOT covered",
			n, nr, want, got)
	}
}

// fileStat is stat(2) of path.
func fileStat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	return st
}
