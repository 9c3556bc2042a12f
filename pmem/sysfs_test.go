package pmem

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/pmem/memspec"
)

const testUUID = "4a3e6b7c-1d2f-4e5a-9b8c-7d6e5f4a3b2c"

// daxTree describes a fake sysfs for one device-dax instance.
type daxTree struct {
	maj, min  uint32
	size      string // dev_dax size; "" leaves the file out
	align     string // dev_dax align; "" leaves it out (pre-5.10 kernels)
	region    string // dax_region/align
	uuid      string // the nd_dax device's uuid
	namespace string // the nd_dax device's namespace
	nsUUID    string // /sys/bus/nd/devices/<namespace>/uuid
	subsystem string // "dax" unless set
}

// build lays the tree out as Linux 6.1 does for /dev/dax0.0 made by
// `ndctl create-namespace -m devdax` on an e820 (memmap=) region:
//
//	dev/char/MAJ:MIN -> ../../devices/platform/e820_pmem/ndbus0/region0/dax0.0/dax0.0
//	devices/.../region0/dax0.0/           the nd_dax device: uuid, namespace, dax_region/
//	devices/.../region0/dax0.0/dax0.0/    the dev_dax device: size, align, subsystem
func (d daxTree) build(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	ndDax := filepath.Join(root, "devices/platform/e820_pmem/ndbus0/region0/dax0.0")
	devDax := filepath.Join(ndDax, "dax0.0")
	write := func(path, content string) {
		if content == "" {
			return
		}
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(content+"\n"), 0o444))
	}
	require.NoError(t, os.MkdirAll(devDax, 0o755))
	sub := d.subsystem
	if sub == "" {
		sub = "dax"
	}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "bus", sub, "devices"), 0o755))
	require.NoError(t, os.Symlink("../../../../../../../bus/"+sub, filepath.Join(devDax, "subsystem")))
	write(filepath.Join(devDax, "size"), d.size)
	write(filepath.Join(devDax, "align"), d.align)
	write(filepath.Join(devDax, "dev"), fmt.Sprintf("%d:%d", d.maj, d.min))
	write(filepath.Join(ndDax, "dax_region", "align"), d.region)
	write(filepath.Join(ndDax, "uuid"), d.uuid)
	write(filepath.Join(ndDax, "namespace"), d.namespace)
	if d.namespace != "" {
		write(filepath.Join(root, "bus/nd/devices", d.namespace, "uuid"), d.nsUUID)
	}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "dev/char"), 0o755))
	require.NoError(t, os.Symlink("../../devices/platform/e820_pmem/ndbus0/region0/dax0.0/dax0.0",
		filepath.Join(root, "dev/char", fmt.Sprintf("%d:%d", d.maj, d.min))))
	return root
}

// The 6.1 layout: size and align on the dev_dax device, the uuid ndctl
// shows on its parent.
func TestReadDevDax(t *testing.T) {
	root := daxTree{maj: 252, min: 0, size: "264241152", align: "2097152", region: "2097152", uuid: testUUID, namespace: "namespace0.0"}.build(t)
	info, err := readDevDax(root, 252, 0)
	require.NoError(t, err)
	require.Equal(t, "dax0.0", info.Name)
	require.Equal(t, uint64(252*mib), info.Size)
	require.Equal(t, uint64(2*mib), info.Align)
	require.Equal(t, testUUID, info.UUID)
	require.Equal(t, "namespace0.0", info.Namespace)
	// The uuid is read from the real parent, not from dev/char (a lexical
	// ".." on the symlink would land there).
	realRoot, err := filepath.EvalSymlinks(root)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(realRoot, "devices/platform/e820_pmem/ndbus0/region0/dax0.0/uuid"), info.UUIDFrom)
}

// Pre-5.10 kernels have no per-device align: the region's is used. A
// parent without a uuid falls back to the namespace's own uuid; an all-zero
// uuid counts as none.
func TestReadDevDaxFallbacks(t *testing.T) {
	root := daxTree{maj: 252, min: 1, size: "1073741824", region: "1073741824", uuid: "00000000-0000-0000-0000-000000000000",
		namespace: "namespace1.0", nsUUID: testUUID}.build(t)
	info, err := readDevDax(root, 252, 1)
	require.NoError(t, err)
	require.Equal(t, uint64(1<<30), info.Align)
	require.Equal(t, testUUID, info.UUID)
	require.Contains(t, info.UUIDFrom, "bus/nd/devices/namespace1.0/uuid")

	root = daxTree{maj: 252, min: 2, size: "1073741824", align: "2097152"}.build(t)
	info, err = readDevDax(root, 252, 2)
	require.NoError(t, err)
	require.Empty(t, info.UUID)
}

func TestReadDevDaxRefuses(t *testing.T) {
	_, err := readDevDax(t.TempDir(), 1, 3)
	require.ErrorIs(t, err, errNotDax)
	require.ErrorContains(t, err, "no sysfs entry")

	root := daxTree{maj: 1, min: 3, size: "0", subsystem: "mem"}.build(t)
	_, err = readDevDax(root, 1, 3)
	require.ErrorIs(t, err, errNotDax)
	require.ErrorContains(t, err, `its sysfs subsystem is "mem"`)

	root = daxTree{maj: 252, min: 0, size: "1073741824", align: "3000000"}.build(t)
	_, err = readDevDax(root, 252, 0)
	require.ErrorContains(t, err, "not a power of two")

	root = daxTree{maj: 252, min: 0, align: "2097152"}.build(t)
	_, err = readDevDax(root, 252, 0)
	require.ErrorContains(t, err, "read ")
	require.ErrorContains(t, err, "/size")
}

// The whole device-dax path of Probe and Check, on a real character device
// (/dev/null, 1:3) described by a fake sysfs as a 252MiB device-dax instance
// aligned to 2MiB (what the lab's 256MiB memmap= namespace gives): class,
// identity, the first-Size-bytes rule, and the refusals of a block that is
// too large or not a multiple of the alignment. Mapping a real /dev/daxX.Y
// is the lab's test (TestLabDax).
func TestProbeDevDaxFakeSysfs(t *testing.T) {
	st := fileStat(t, "/dev/null")
	maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	h := &host{sys: daxTree{maj: maj, min: min, size: "264241152", align: "2097152", uuid: testUUID, namespace: "namespace0.0"}.build(t),
		proc: "/proc", mountinfo: "/proc/self/mountinfo", locks: "/proc/locks"}
	spec := Spec{Name: "ram0", Size: 128 * mib, Backing: "/dev/null", Shared: true, Mode: memspec.ModeReboot, host: h}

	b, err := Probe(spec)
	require.NoError(t, err)
	require.Equal(t, KindDevDax, b.Kind)
	require.Equal(t, SurvivesKexec, b.Class)
	require.Equal(t, Identity{Kind: KindDevDax, Path: "/dev/null", Dev: st.Dev, Ino: st.Ino, Rdev: st.Rdev,
		Size: 128 * mib, Align: 2 * mib, DaxUUID: testUUID}, b.Identity)
	require.Equal(t, uint64(252*mib), b.DevSize)
	require.Contains(t, b.Notes, "uses the first 128MiB of the 252MiB device")

	rep, err := Check(spec)
	require.NoError(t, err)
	require.True(t, rep.OK)
	require.Equal(t, memspec.ModeReboot, rep.Mode)
	require.Equal(t, KindDevDax, rep.Blocks[0].Kind)
	require.Equal(t, testUUID, rep.Blocks[0].Identity.DaxUUID)

	spec.Size = 256 * mib
	_, err = Probe(spec)
	require.ErrorIs(t, err, ErrMisfit)
	require.ErrorContains(t, err, `memory block "ram0" (/dev/null): device-dax /dev/null holds 252MiB, less than the 256MiB in the config; use a size of at most 252MiB`)

	h.sys = daxTree{maj: maj, min: min, size: "4294967296", align: "1073741824"}.build(t)
	spec.Size = 1536 * mib
	_, err = Probe(spec)
	require.ErrorIs(t, err, ErrMisfit)
	require.ErrorContains(t, err, "size 1536MiB is not a multiple of the backing's device-dax alignment 1GiB")
	spec.Size = 2 << 30
	b, err = Probe(spec)
	require.NoError(t, err)
	require.Equal(t, uint64(1<<30), b.Align, "Region.Align follows a 1GiB device alignment")

	// preserved_across_kexec is for tmpfs only, even where it would be true.
	spec.PreservedAcrossKexec = true
	_, err = Probe(spec)
	require.ErrorContains(t, err, "preserved_across_kexec = true is only for files on tmpfs or /dev/shm")
	require.ErrorContains(t, err, "this backing is device-dax, classified survives-kexec on its own: remove the setting")
}

// Any other character device is refused, naming what it is, by Probe and
// by Open (which refuses it from a stat, before opening: opening some
// devices acts).
func TestProbeCharDeviceNotDax(t *testing.T) {
	spec := Spec{Name: "ram0", Size: 2 * mib, Backing: "/dev/null", Shared: true}
	_, err := Probe(spec)
	require.ErrorIs(t, err, errNotDax)
	require.ErrorContains(t, err, `memory block "ram0" (/dev/null): is a character device (1:3) but not a device-dax instance: its sysfs subsystem is "mem"`)
	byFD := probeCount.byFD.Load()
	_, err = Open(spec)
	require.ErrorIs(t, err, errNotDax)
	require.Equal(t, byFD, probeCount.byFD.Load(), "refused before it was opened")
}

// A missing /dev/daxX.Y is never created, whatever create says.
func TestProbeMissingDevDaxNeverCreated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dax7.0")
	for _, create := range []bool{false, true} {
		_, err := Open(Spec{Name: "ram0", Size: 2 * mib, Backing: path, Shared: true, Create: create})
		require.ErrorIs(t, err, os.ErrNotExist)
		require.ErrorContains(t, err, "device-dax "+path+" does not exist")
		require.NoFileExists(t, path)
	}
}
