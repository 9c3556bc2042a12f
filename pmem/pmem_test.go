package pmem

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/pmem/memspec"
)

const mib = 1 << 20

// mapping returns the /proc/self/maps line that contains addr: start, end
// and permissions ("rw-s", "rw-p").
func mapping(t *testing.T, addr uintptr) (start, end uintptr, perms string) {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		lo, hi, _ := strings.Cut(fields[0], "-")
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		require.NoError(t, errors.Join(err1, err2))
		if uintptr(s) <= addr && addr < uintptr(e) {
			return uintptr(s), uintptr(e), fields[1]
		}
	}
	t.Fatalf("address %#x is not mapped", addr)
	return 0, 0, ""
}

// checkRegion asserts what every open Region guarantees: Mem covers Size
// bytes at Addr, Addr is 2 MiB aligned, the mapping is read-write with the
// expected sharing, and the first and last bytes are writable.
func checkRegion(t *testing.T, r *Region, shared bool) {
	t.Helper()
	require.Len(t, r.Mem, int(r.Size))
	require.Equal(t, uint64(DefaultAlign), r.Align)
	require.NotZero(t, r.Addr())
	require.Zero(t, r.Addr()%DefaultAlign, "Addr %#x is not 2MiB aligned", r.Addr())
	start, end, perms := mapping(t, r.Addr())
	require.LessOrEqual(t, start, r.Addr())
	require.GreaterOrEqual(t, end, r.Addr()+uintptr(r.Size), "one mapping covers the whole region")
	want := "rw-p"
	if shared {
		want = "rw-s"
	}
	require.Equal(t, want, perms)
	r.Mem[0] = 0xa5
	r.Mem[len(r.Mem)-1] = 0x5a
	require.Equal(t, byte(0xa5), r.Mem[0])
	require.Equal(t, byte(0x5a), r.Mem[len(r.Mem)-1])
}

func TestAnonymous(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			r, err := Open(Spec{Name: "ram0", Size: 6 * mib, Backing: memspec.BackingAnonymous, Shared: shared})
			require.NoError(t, err)
			defer r.Close()
			require.Equal(t, KindAnonymous, r.Kind)
			require.Equal(t, "ram0", r.Name)
			require.Empty(t, r.Path)
			require.Nil(t, r.File())
			require.Equal(t, make([]byte, 4096), r.Mem[:4096], "anonymous memory starts zeroed")
			checkRegion(t, r, shared)
			require.Equal(t, "ram0: anonymous 6MiB", r.String())
		})
	}
}

// Memfd memory is a file: what the guest writes through Mem is readable
// through File(), which is what lets a restarted VMM inherit it.
func TestMemfd(t *testing.T) {
	r, err := Open(Spec{Name: "ram0", Size: 4 * mib, Backing: memspec.BackingMemfd, Shared: true})
	require.NoError(t, err)
	defer r.Close()
	require.Equal(t, KindMemfd, r.Kind)
	require.NotNil(t, r.File())
	checkRegion(t, r, true)
	copy(r.Mem[mib:], "through the mapping")
	got := make([]byte, len("through the mapping"))
	_, err = r.File().ReadAt(got, mib)
	require.NoError(t, err)
	require.Equal(t, "through the mapping", string(got))
	fi, err := r.File().Stat()
	require.NoError(t, err)
	require.Equal(t, int64(4*mib), fi.Size())
}

// A file backing created with Create=true: exactly Size bytes, mode 0600,
// mapped shared; its content is preserved across Close and Open (with and
// without Create), which proves an existing file is never truncated.
func TestFileCreateAndReopenPreservesContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram0")
	spec := Spec{Name: "ram0", Size: 4 * mib, Backing: path, Shared: true, Create: true}

	r, err := Open(spec)
	require.NoError(t, err)
	require.Equal(t, KindFile, r.Kind)
	require.Equal(t, path, r.Path)
	require.NotNil(t, r.File())
	checkRegion(t, r, true)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, int64(4*mib), fi.Size())
	require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())

	pattern := make([]byte, 4*mib)
	_, _ = rand.Read(pattern)
	copy(r.Mem, pattern)
	require.NoError(t, r.Close())

	onDisk, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.Equal(pattern, onDisk), "writes through a shared mapping reach the file")

	for _, create := range []bool{true, false} {
		spec.Create = create
		r, err := Open(spec)
		require.NoError(t, err, "create=%v", create)
		require.True(t, bytes.Equal(pattern, r.Mem), "content preserved when reopening with create=%v", create)
		require.NoError(t, r.Close())
	}
}

// The same on /dev/shm, the common backing for VMM restarts.
func TestFileOnDevShm(t *testing.T) {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("/dev/shm must be a tmpfs for this test (mount -t tmpfs tmpfs /dev/shm) (statfs: %v, type %#x); the tmpfs case is not covered", err, st.Type)
	}
	path := fmt.Sprintf("/dev/shm/pmvm-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_"))
	_ = os.Remove(path)
	t.Cleanup(func() { _ = os.Remove(path) })

	spec := Spec{Name: "ram0", Size: 2 * mib, Backing: path, Shared: true, Create: true}
	r, err := Open(spec)
	require.NoError(t, err)
	checkRegion(t, r, true)
	copy(r.Mem[100:], "survives the VMM")
	require.NoError(t, r.Close())

	spec.Create = false
	r, err = Open(spec)
	require.NoError(t, err)
	defer r.Close()
	require.Equal(t, "survives the VMM", string(r.Mem[100:116]))
}

// writeFile makes a backing file of n random bytes and returns its content.
func writeFile(t *testing.T, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	require.NoError(t, os.WriteFile(path, b, 0o600))
	return b
}

// An existing file smaller or larger than the config is refused, with both
// sizes and what to do, and the file is left exactly as it was: pmem never
// truncates, zeroes or resizes a backing (with or without Create).
func TestFileSizeMismatchRefusedAndUntouched(t *testing.T) {
	for _, tc := range []struct {
		name      string
		have      int
		want      uint64
		wantInErr []string
	}{
		{"too small", 2 * mib, 4 * mib, []string{
			"backing file is 2MiB but the config says 4MiB",
			"resize it yourself with truncate -s 4MiB ",
			"or fix size in the config",
		}},
		{"too large", 6 * mib, 4 * mib, []string{
			"backing file is 6MiB, larger than the 4MiB in the config",
			`size = "6MiB"`,
			"truncate -s 4MiB ",
		}},
		{"odd size", 2*mib + 1, 2 * mib, []string{"backing file is 2097153, larger than the 2MiB"}},
	} {
		for _, create := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/create=%v", tc.name, create), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "ram0")
				before := writeFile(t, path, tc.have)
				_, err := Open(Spec{Name: "ram0", Size: tc.want, Backing: path, Shared: true, Create: create})
				require.Error(t, err)
				require.ErrorIs(t, err, ErrSizeMismatch)
				require.Contains(t, err.Error(), `memory block "ram0" (`+path+`)`)
				for _, s := range tc.wantInErr {
					require.Contains(t, err.Error(), s)
				}
				after, err := os.ReadFile(path)
				require.NoError(t, err)
				require.Len(t, after, tc.have, "size unchanged")
				require.True(t, bytes.Equal(before, after), "content unchanged")
			})
		}
	}
}

// A missing file with Create=false is refused, naming the block, the path
// and create = true; nothing is created.
func TestFileMissingRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram0")
	_, err := Open(Spec{Name: "ram0", Size: 4 * mib, Backing: path, Shared: true})
	require.Error(t, err)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.Contains(t, err.Error(), `memory block "ram0"`)
	require.Contains(t, err.Error(), path)
	require.Contains(t, err.Error(), "create = true")
	require.Contains(t, err.Error(), "truncate -s 4MiB "+path)
	_, err = os.Stat(path)
	require.ErrorIs(t, err, fs.ErrNotExist, "nothing created")
}

// Create=true in a directory that does not exist says which directory.
func TestFileCreateMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	_, err := Open(Spec{Name: "ram0", Size: 2 * mib, Backing: filepath.Join(dir, "ram0"), Shared: true, Create: true})
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.Contains(t, err.Error(), "directory "+dir+" does not exist")
}

// Things that are not regular files are refused, with or without Create.
func TestFileNotRegularRefused(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ path, want string }{
		{dir, "is a directory"},
		{"/dev/null", "is a character device"},
	} {
		for _, create := range []bool{false, true} {
			_, err := Open(Spec{Name: "ram0", Size: 2 * mib, Backing: tc.path, Shared: true, Create: create})
			require.Error(t, err, tc.path)
			require.Contains(t, err.Error(), tc.want, tc.path)
		}
	}
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	require.True(t, fi.IsDir())
}

// Spec mistakes are refused before anything is opened or mapped.
func TestSpecRefused(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ram0")
	for _, tc := range []struct {
		proves string
		spec   Spec
		want   string
	}{
		{"a name is required", Spec{Size: 2 * mib, Backing: memspec.BackingAnonymous}, "without a name"},
		{"a backing is required", Spec{Name: "r", Size: 2 * mib}, "no backing"},
		{"size is not zero", Spec{Name: "r", Backing: memspec.BackingAnonymous}, "size is zero"},
		{"size is a multiple of 2MiB", Spec{Name: "r", Size: 3 * mib, Backing: memspec.BackingAnonymous}, "size 3MiB is not a multiple of 2MiB"},
		{"create is for files", Spec{Name: "r", Size: 2 * mib, Backing: memspec.BackingAnonymous, Create: true}, "file backings only"},
		{"memfd is shared", Spec{Name: "r", Size: 2 * mib, Backing: memspec.BackingMemfd}, "memfd backing must be mapped shared"},
		{"a file is shared", Spec{Name: "r", Size: 2 * mib, Backing: file, Create: true}, "file backing must be mapped shared"},
		{"a file path is absolute", Spec{Name: "r", Size: 2 * mib, Backing: "ram0", Shared: true}, "not an absolute path"},
	} {
		t.Run(tc.proves, func(t *testing.T) {
			r, err := Open(tc.spec)
			require.Nil(t, r)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := os.Stat(file)
	require.ErrorIs(t, err, fs.ErrNotExist, "a refused spec creates no file")
}

// Close unmaps and closes once; later calls return nil, and the Region no
// longer exposes the mapping.
func TestCloseIdempotent(t *testing.T) {
	for _, backing := range []string{memspec.BackingAnonymous, memspec.BackingMemfd, filepath.Join(t.TempDir(), "ram0")} {
		r, err := Open(Spec{Name: "ram0", Size: 2 * mib, Backing: backing, Shared: true, Create: backing[0] == '/'})
		require.NoError(t, err)
		f := r.File()
		require.NoError(t, r.Close())
		require.NoError(t, r.Close())
		require.Nil(t, r.Mem)
		require.Zero(t, r.Addr())
		if f != nil {
			_, err := f.Stat()
			require.ErrorIs(t, err, os.ErrClosed, "the backing file is closed")
		}
	}
}

// Many regions in a row are all aligned, whatever address the kernel picks
// for the reservation.
func TestAlignmentManyRegions(t *testing.T) {
	var rs []*Region
	defer func() {
		for _, r := range rs {
			r.Close()
		}
	}()
	for i := 0; i < 16; i++ {
		r, err := Open(Spec{Name: fmt.Sprintf("ram%d", i), Size: 2 * mib * uint64(1+i%3), Backing: memspec.BackingAnonymous})
		require.NoError(t, err)
		rs = append(rs, r)
		require.Zero(t, r.Addr()%DefaultAlign)
	}
}

// trim gives back exactly align bytes around the aligned start.
func TestTrim(t *testing.T) {
	const a = DefaultAlign
	for _, tc := range []struct{ base, head, tail uintptr }{
		{0x7f0000000000, 0, a},
		{0x7f0000001000, a - 0x1000, 0x1000},
		{0x7f00001ff000, 0x1000, a - 0x1000},
		{0x7f0000100000, 0x100000, 0x100000},
	} {
		head, tail := trim(tc.base, a)
		require.Equal(t, tc.head, head, "base %#x", tc.base)
		require.Equal(t, tc.tail, tail, "base %#x", tc.base)
		require.Zero(t, (tc.base+head)%a)
	}
}
