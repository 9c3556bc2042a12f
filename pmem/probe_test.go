package pmem

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// Anonymous memory, shared or not, is volatile: accepted by mode none,
// refused by restart and reboot before anything is mapped, with the block,
// its backing, its class and what to use instead.
func TestAnonymousClassified(t *testing.T) {
	for _, shared := range []bool{false, true} {
		spec := Spec{Name: "ram0", Size: 4 * mib, Backing: memspec.BackingAnonymous, Shared: shared}
		b, err := Probe(spec)
		require.NoError(t, err)
		require.Equal(t, Volatile, b.Class)
		require.Equal(t, Identity{Kind: KindAnonymous, Size: 4 * mib, Align: DefaultAlign}, b.Identity)

		spec.Mode = memspec.ModeReboot
		r, err := Open(spec)
		require.Nil(t, r)
		require.ErrorIs(t, err, ErrModeRefused)
		require.EqualError(t, err, `memory block "ram0" (anonymous) is volatile: mode reboot needs memory that survives a host kexec; use a device-dax namespace (/dev/daxX.Y, ndctl create-namespace -m devdax) or a file on a DAX filesystem on persistent memory (mount -o dax=always)`)

		spec.Mode = memspec.ModeRestart
		_, err = Open(spec)
		require.ErrorIs(t, err, ErrModeRefused)
		require.ErrorContains(t, err, `memory block "ram0" (anonymous) is volatile: mode restart needs memory that outlives the VMM process`)
		require.ErrorContains(t, err, `use backing = "memfd"`)

		spec.Mode = memspec.ModeNone
		r, err = Open(spec)
		require.NoError(t, err)
		require.Equal(t, Volatile, r.Class)
		require.Equal(t, KindAnonymous, r.Identity().Kind)
		require.NoError(t, r.Close())
	}
}

// A memfd survives a restart (when its descriptor is inherited), not a
// kexec; its identity is the memfd's inode.
func TestMemfdClassified(t *testing.T) {
	spec := Spec{Name: "ram1", Size: 2 * mib, Backing: memspec.BackingMemfd, Shared: true, Mode: memspec.ModeRestart}
	r, err := Open(spec)
	require.NoError(t, err)
	defer r.Close()
	require.Equal(t, SurvivesRestart, r.Class)
	st := fileStatFd(t, r.File())
	require.Equal(t, st.Ino, r.Identity().Ino)
	require.Equal(t, st.Dev, r.Identity().Dev)

	spec.Mode = memspec.ModeReboot
	_, err = Open(spec)
	require.ErrorIs(t, err, ErrModeRefused)
	require.ErrorContains(t, err, `memory block "ram1" (memfd) survives a VMM restart but not a host kexec: mode reboot needs`)

	spec.PreservedAcrossKexec = true
	_, err = Probe(spec)
	require.ErrorContains(t, err, "preserved_across_kexec = true applies to tmpfs or /dev/shm files only")
}

func fileStatFd(t *testing.T, f *os.File) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(int(f.Fd()), &st))
	return st
}

// A file on a tmpfs this test mounts: probing creates nothing; it survives
// a restart; reboot mode refuses it unless the block opts in with
// preserved_across_kexec, which makes it SurvivesKexec and says so. The
// content survives Close and Open (a VMM restart).
func TestTmpfsOwnMount(t *testing.T) {
	dir := mountFS(t, "tmpfs", "size=64m,mode=0700")
	path := filepath.Join(dir, "ram0")
	spec := Spec{Name: "ram0", Size: 4 * mib, Backing: path, Shared: true, Create: true, Mode: memspec.ModeRestart, VM: "t"}

	rep, err := Check(spec)
	require.NoError(t, err)
	br := rep.Blocks[0]
	require.True(t, br.OK)
	require.Equal(t, KindTmpfs, br.Kind)
	require.Equal(t, SurvivesRestart, br.Class)
	require.Contains(t, strings.Join(br.Notes, "; "), "does not exist yet")
	require.True(t, br.Missing, "the report says the file is still to be created")
	require.NoFileExists(t, path, "Check creates nothing")

	spec.Mode = memspec.ModeReboot
	rep, err = Check(spec)
	require.ErrorIs(t, err, ErrModeRefused)
	require.False(t, rep.OK)
	require.True(t, strings.HasPrefix(rep.Blocks[0].Reason, "survives a VMM restart but not a host kexec: mode reboot needs memory that survives a host kexec"), rep.Blocks[0].Reason)
	require.Contains(t, rep.Blocks[0].Reason, "preserved_across_kexec = true in this [[memory]] block")
	_, err = Open(spec)
	require.ErrorIs(t, err, ErrModeRefused)
	require.NoFileExists(t, path, "a refused Open creates nothing")

	spec.PreservedAcrossKexec = true
	b, err := Probe(spec)
	require.NoError(t, err)
	require.Equal(t, SurvivesKexec, b.Class)
	require.True(t, b.OptIn)
	require.Contains(t, strings.Join(b.Notes, "; "), "preserved_across_kexec = true")

	r, err := Open(spec)
	require.NoError(t, err)
	require.Equal(t, KindTmpfs, r.Kind)
	require.True(t, r.OptIn)
	require.Equal(t, SurvivesKexec, r.Class)
	checkRegion(t, r, true)
	st := fileStat(t, path)
	require.Equal(t, Identity{Kind: KindTmpfs, Path: path, Dev: st.Dev, Ino: st.Ino, Size: 4 * mib, Align: DefaultAlign}, r.Identity())
	pattern := make([]byte, 4*mib)
	_, _ = rand.Read(pattern)
	copy(r.Mem, pattern)
	require.NoError(t, r.Close())

	spec.Create = false
	r, err = Open(spec)
	require.NoError(t, err)
	require.True(t, bytes.Equal(pattern, r.Mem), "content survives close and reopen")
	require.Equal(t, st.Ino, r.Identity().Ino, "same file")
	require.NoError(t, r.Close())
}

// /dev/shm is tmpfs too.
func TestDevShmIsTmpfs(t *testing.T) {
	b, err := Probe(Spec{Name: "ram0", Size: 2 * mib, Backing: "/dev/shm/pmvm-probe-never-created", Shared: true, Create: true})
	require.NoError(t, err)
	require.Equal(t, KindTmpfs, b.Kind)
	require.Equal(t, SurvivesRestart, b.Class)
	require.NoFileExists(t, "/dev/shm/pmvm-probe-never-created")
}

// A file on a hugetlbfs this test mounts (2 MiB pages, reserved for the
// test): survives a restart, refused by reboot mode; the new file reserves
// its huge pages; the mapping is hugepage-aligned; content survives
// reopening; the opt-in is refused.
func TestHugetlbfs(t *testing.T) {
	reserveHugePages(t, 4)
	dir := mountFS(t, "hugetlbfs", "pagesize=2M,mode=0700")
	path := filepath.Join(dir, "ram0")
	spec := Spec{Name: "ram0", Size: 4 * mib, Backing: path, Shared: true, Create: true, Mode: memspec.ModeRestart}

	b, err := Probe(spec)
	require.NoError(t, err)
	require.Equal(t, KindHugetlbfs, b.Kind)
	require.Equal(t, SurvivesRestart, b.Class)
	require.Equal(t, uint64(2*mib), b.Align)
	require.Contains(t, b.Notes, "huge page size 2MiB (statfs; mount option pagesize=2M)")
	require.NoFileExists(t, path)

	reboot := spec
	reboot.Mode = memspec.ModeReboot
	_, err = Open(reboot)
	require.ErrorIs(t, err, ErrModeRefused)
	require.ErrorContains(t, err, `memory block "ram0" (`+path+`) survives a VMM restart but not a host kexec: mode reboot needs memory that survives a host kexec (hugetlbfs pages are freed by a kexec)`)
	require.NoFileExists(t, path)

	optIn := spec
	optIn.PreservedAcrossKexec = true
	_, err = Probe(optIn)
	require.ErrorContains(t, err, "this backing is a hugetlbfs file, classified survives-restart on its own: remove the setting")

	r, err := Open(spec)
	require.NoError(t, err)
	require.Equal(t, KindHugetlbfs, r.Kind)
	checkRegion(t, r, true)
	copy(r.Mem[3*mib:], "on huge pages")
	require.NoError(t, r.Close())
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, int64(4*mib), fi.Size())

	spec.Create = false
	r, err = Open(spec)
	require.NoError(t, err)
	require.Equal(t, "on huge pages", string(r.Mem[3*mib:3*mib+13]))
	require.NoError(t, r.Close())

	spec.Size = 2 * mib
	_, err = Open(spec)
	require.ErrorIs(t, err, ErrSizeMismatch, "an existing hugetlbfs file is never resized")
}

// On a hugetlbfs with 1 GiB pages, a 2 MiB block does not fit and is
// refused before anything is created; a 1 GiB block fits with Align 1 GiB.
// (Probing only: no 1 GiB page is needed.)
func TestHugetlbfs1GMisfit(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/mm/hugepages/hugepages-1048576kB"); err != nil {
		t.Fatalf("this kernel or CPU has no 1GiB huge pages (%v); the hugetlbfs page-size misfit case is NOT covered", err)
	}
	dir := mountFS(t, "hugetlbfs", "pagesize=1G,mode=0700")
	path := filepath.Join(dir, "ram0")
	spec := Spec{Name: "ram0", Size: 2 * mib, Backing: path, Shared: true, Create: true}
	_, err := Open(spec)
	require.ErrorIs(t, err, ErrMisfit)
	require.ErrorContains(t, err, "size 2MiB is not a multiple of the backing's huge page size 1GiB; make size a multiple of 1GiB")
	require.NoFileExists(t, path)

	spec.Size = 1 << 30
	b, err := Probe(spec)
	require.NoError(t, err)
	require.Equal(t, uint64(1<<30), b.Align)
}

// An existing file on an ordinary filesystem may not claim the opt-in.
func TestOptInRefusedOnOrdinaryFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram0")
	writeFile(t, path, 2*mib)
	_, err := Probe(Spec{Name: "ram0", Size: 2 * mib, Backing: path, Shared: true, PreservedAcrossKexec: true})
	require.ErrorContains(t, err, "preserved_across_kexec = true is only for files on tmpfs or /dev/shm")
}

// Check covers every block in order, refused or not, and its error names
// each refused block; the report encodes to JSON.
func TestCheckReportsEveryBlock(t *testing.T) {
	dir := t.TempDir()
	sized := filepath.Join(dir, "small")
	writeFile(t, sized, 2*mib)
	specs := []Spec{
		{Name: "ram0", Size: 4 * mib, Backing: memspec.BackingAnonymous, Mode: memspec.ModeRestart},
		{Name: "ram1", Size: 2 * mib, Backing: memspec.BackingMemfd, Shared: true, Mode: memspec.ModeRestart},
		{Name: "ram2", Size: 4 * mib, Backing: sized, Shared: true, Mode: memspec.ModeRestart},
		{Name: "ram3", Size: 2 * mib, Backing: filepath.Join(dir, "missing"), Shared: true, Mode: memspec.ModeRestart},
	}
	rep, err := Check(specs...)
	require.Error(t, err)
	require.False(t, rep.OK)
	require.Equal(t, memspec.ModeRestart, rep.Mode)
	require.Len(t, rep.Blocks, 4)
	var names []string
	for _, b := range rep.Blocks {
		names = append(names, b.Block)
	}
	require.Equal(t, []string{"ram0", "ram1", "ram2", "ram3"}, names)
	require.False(t, rep.Blocks[0].OK)
	require.Equal(t, Volatile, rep.Blocks[0].Class)
	require.True(t, rep.Blocks[1].OK)
	require.False(t, rep.Blocks[2].OK)
	require.True(t, strings.HasPrefix(rep.Blocks[2].Reason, "backing file is 2MiB but the config says 4MiB"), rep.Blocks[2].Reason)
	require.Empty(t, rep.Blocks[2].Class, "unknown when the probe failed")
	require.False(t, rep.Blocks[3].OK)
	require.Contains(t, rep.Blocks[3].Reason, "does not exist; set create = true")
	require.ErrorIs(t, err, ErrModeRefused)
	require.ErrorIs(t, err, ErrSizeMismatch)
	require.ErrorIs(t, err, os.ErrNotExist)
	for _, n := range []string{`"ram0"`, `"ram2"`, `"ram3"`} {
		require.ErrorContains(t, err, "memory block "+n)
	}
	require.NotContains(t, err.Error(), `"ram1"`)

	b, err := json.Marshal(rep)
	require.NoError(t, err)
	var back Report
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, rep, back)
}

// A spec with an unknown mode is refused.
func TestUnknownModeRefused(t *testing.T) {
	_, err := Probe(Spec{Name: "ram0", Size: 2 * mib, Backing: memspec.BackingAnonymous, Mode: "suspend"})
	require.ErrorContains(t, err, `mode "suspend" is not one of`)
}

// Open classifies an existing backing once, through the descriptor it then
// locks and maps, never through the path; Check looks through the path,
// once per block.
func TestOpenProbesTheDescriptorOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram0")
	require.NoError(t, os.WriteFile(path, make([]byte, 2*mib), 0o600))
	spec := Spec{Name: "ram0", Size: 2 * mib, Backing: path, Shared: true, LockDir: t.TempDir()}

	byPath, byFD := probeCount.byPath.Load(), probeCount.byFD.Load()
	r, err := Open(spec)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.Equal(t, byPath, probeCount.byPath.Load(), "Open looked at the path")
	require.Equal(t, byFD+1, probeCount.byFD.Load(), "Open classified the descriptor once")

	_, err = Check(spec)
	require.NoError(t, err)
	require.Equal(t, byPath+1, probeCount.byPath.Load(), "Check looks at the path once")
	require.Equal(t, byFD+1, probeCount.byFD.Load(), "Check opens nothing")
}
