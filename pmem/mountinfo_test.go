package pmem

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// A mountinfo as Linux 6.1 writes it, with the cases that matter: ext4 on
// pmem with dax=always, xfs with the old "dax" spelling, ext4 dax=inode,
// virtiofs with dax=always (DAX, but not persistent memory), /dev/shm
// mounted twice (the later one hides the earlier), hugetlbfs with its page
// size, a mount point with a space, optional fields.
const mountinfoFixture = `22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
24 22 0:6 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=1000k,nr_inodes=250,mode=755
25 24 0:23 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw
30 24 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683656k
40 22 259:0 / /mnt/pmem rw,relatime shared:10 - ext4 /dev/pmem0 rw,dax=always
41 22 259:1 / /mnt/pmem-xfs rw,relatime - xfs /dev/pmem1 rw,attr2,dax,inode64,logbufs=8,noquota
42 22 259:2 / /mnt/pmem\040inode rw,relatime - ext4 /dev/pmem2 rw,dax=inode
43 22 0:50 / /mnt/virtiofs rw,relatime - virtiofs myfs rw,dax=always
44 22 0:51 / /mnt/huge rw,relatime - hugetlbfs none rw,pagesize=1024M
45 40 259:0 /vms /srv/vms rw,relatime - ext4 /dev/pmem0 rw,dax=always
`

func fixtureEntries(t *testing.T) []mountEntry {
	t.Helper()
	es, err := parseMountinfo(strings.NewReader(mountinfoFixture))
	require.NoError(t, err)
	require.Len(t, es, 10)
	return es
}

func TestParseMountinfo(t *testing.T) {
	es := fixtureEntries(t)
	pm := es[4]
	require.Equal(t, mountEntry{
		ID: 40, Parent: 22, Major: 259, Minor: 0, Root: "/", MountPoint: "/mnt/pmem",
		MountOpts: []string{"rw", "relatime"}, FSType: "ext4", Source: "/dev/pmem0", SuperOpts: []string{"rw", "dax=always"},
	}, pm)
	require.Equal(t, "/mnt/pmem inode", es[6].MountPoint, `\040 is a space`)
	require.Equal(t, "/vms", es[9].Root)
	require.Equal(t, "1024M", mountOption(&es[8], "pagesize"))

	_, err := parseMountinfo(strings.NewReader("1 2 3\n"))
	require.ErrorContains(t, err, "mountinfo line 1")
}

// The real /proc/self/mountinfo parses, and "/" is found for "/".
func TestParseRealMountinfo(t *testing.T) {
	f, err := os.Open("/proc/self/mountinfo")
	require.NoError(t, err)
	defer f.Close()
	es, err := parseMountinfo(f)
	require.NoError(t, err)
	st := fileStat(t, "/")
	e := findMount(es, "/", 0, unix.Major(st.Dev), unix.Minor(st.Dev))
	require.NotNil(t, e)
	require.Equal(t, "/", e.MountPoint)
}

func TestFindMount(t *testing.T) {
	es := fixtureEntries(t)
	for _, tc := range []struct {
		path     string
		mntID    uint64
		maj, min uint32
		wantID   uint64
	}{
		{"/mnt/pmem/vm/ram0", 0, 259, 0, 40},
		{"/srv/vms/ram0", 0, 259, 0, 45},      // a bind of a subdirectory
		{"/dev/shm/pmvm-ram0", 0, 0, 27, 30},  // the visible /dev/shm
		{"/dev/shm/pmvm-ram0", 25, 0, 23, 25}, // statx's mount ID decides
		{"/dev/shm/x", 0, 9, 9, 30},           // unknown device: deepest, latest mount
		{"/mnt/pmemfoo/x", 0, 254, 1, 22},     // a prefix that is not a path prefix
		{"/mnt/pmem inode/f", 0, 259, 2, 42},
	} {
		e := findMount(es, tc.path, tc.mntID, tc.maj, tc.min)
		require.NotNil(t, e, tc.path)
		require.Equal(t, tc.wantID, e.ID, tc.path)
	}
	require.Nil(t, findMount(nil, "/x", 0, 0, 0))
}

func TestDaxOption(t *testing.T) {
	es := fixtureEntries(t)
	want := map[uint64]daxMount{22: daxOff, 25: daxOff, 40: daxAlways, 41: daxAlways, 42: daxInode, 43: daxAlways, 44: daxOff}
	for i := range es {
		if w, ok := want[es[i].ID]; ok {
			require.Equal(t, w, daxOption(&es[i]), "mount %d %s", es[i].ID, es[i].MountPoint)
		}
	}
	never := mountEntry{SuperOpts: []string{"rw", "dax=never"}}
	require.Equal(t, daxOff, daxOption(&never))
}

// fakeBlockSysfs builds /sys/dev/block entries: 259:0 a pmem disk under
// an ndbus, 259:1 its partition, 253:0 a dm device on pmem0, 253:1 a dm
// device on vda, 254:1 a virtio disk partition.
func fakeBlockSysfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	mk := func(dir string) string {
		p := filepath.Join(root, dir)
		require.NoError(t, os.MkdirAll(p, 0o755))
		return p
	}
	link := func(target, name string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(root, name)), 0o755))
		require.NoError(t, os.Symlink(target, filepath.Join(root, name)))
	}
	mk("devices/platform/e820_pmem/ndbus0/region0/namespace0.0/block/pmem0/pmem0p1")
	mk("devices/pci0000:00/0000:00:04.0/virtio2/block/vda/vda1")
	mk("devices/virtual/block/dm-0/slaves")
	mk("devices/virtual/block/dm-1/slaves")
	link("../../devices/platform/e820_pmem/ndbus0/region0/namespace0.0/block/pmem0", "dev/block/259:0")
	link("../../devices/platform/e820_pmem/ndbus0/region0/namespace0.0/block/pmem0/pmem0p1", "dev/block/259:1")
	link("../../devices/virtual/block/dm-0", "dev/block/253:0")
	link("../../devices/virtual/block/dm-1", "dev/block/253:1")
	link("../../devices/pci0000:00/0000:00:04.0/virtio2/block/vda/vda1", "dev/block/254:1")
	link("../../../../platform/e820_pmem/ndbus0/region0/namespace0.0/block/pmem0", "devices/virtual/block/dm-0/slaves/pmem0")
	link("../../../../pci0000:00/0000:00:04.0/virtio2/block/vda", "devices/virtual/block/dm-1/slaves/vda")
	return root
}

func TestIsPmemBlock(t *testing.T) {
	root := fakeBlockSysfs(t)
	for _, tc := range []struct {
		maj, min uint32
		want     bool
		why      string
	}{
		{259, 0, true, "pmem0"},
		{259, 1, true, "pmem0p1"},
		{253, 0, true, "dm-0"},
		{253, 1, false, "its device dm-1 sits on vda, which is not persistent memory"},
		{254, 1, false, "its device vda1 is not persistent memory"},
		{8, 0, false, "its device 8:0 is no block device in sysfs, so not persistent memory"},
	} {
		ok, why := isPmemBlock(root, tc.maj, tc.min)
		require.Equal(t, tc.want, ok, "%d:%d", tc.maj, tc.min)
		require.Equal(t, tc.why, why, "%d:%d", tc.maj, tc.min)
	}
}

// classifyRegular on the facts the kernel would give for files on the
// fixture's mounts: statx decides for an existing file, the mount option
// for a new one, and DAX counts as surviving a kexec only on pmem.
func TestClassifyFsDax(t *testing.T) {
	es := fixtureEntries(t)
	h := &host{sys: fakeBlockSysfs(t)}
	mount := func(id uint64) *mountEntry {
		for i := range es {
			if es[i].ID == id {
				return &es[i]
			}
		}
		t.Fatalf("no mount %d", id)
		return nil
	}
	ext4 := unix.Statfs_t{Type: unix.EXT4_SUPER_MAGIC}
	for _, tc := range []struct {
		name      string
		f         facts
		exists    bool
		kind      Kind
		class     Class
		mapSync   bool
		noteMatch string
	}{
		{"existing file, statx DAX, on pmem", facts{statfs: ext4, dev: unix.Mkdev(259, 0), daxKnown: true, dax: true, mount: mount(40)}, true,
			KindFsDax, SurvivesKexec, true, "DAX per statx"},
		{"existing file, statx not DAX although mounted dax=always (statx decides)", facts{statfs: ext4, dev: unix.Mkdev(259, 0), daxKnown: true, mount: mount(40)}, true,
			KindFile, SurvivesRestart, false, ""},
		{"existing file, no statx DAX bit (old kernel): mount option", facts{statfs: ext4, dev: unix.Mkdev(259, 1), mount: mount(41)}, true,
			KindFsDax, SurvivesKexec, true, "DAX per the mount option dax=always"},
		{"new file in a dax=always mount on pmem", facts{statfs: ext4, dev: unix.Mkdev(259, 0), mount: mount(45)}, false,
			KindFsDax, SurvivesKexec, true, "on persistent memory (pmem0)"},
		{"new file in a dax=inode mount: not known, so not DAX", facts{statfs: ext4, dev: unix.Mkdev(259, 2), mount: mount(42)}, false,
			KindFile, SurvivesRestart, false, "dax=inode"},
		{"virtiofs with DAX: not persistent memory", facts{statfs: unix.Statfs_t{Type: 0x6a656a63}, dev: unix.Mkdev(0, 50), daxKnown: true, dax: true, mount: mount(43)}, true,
			KindFsDax, SurvivesRestart, true, ""},
		{"dm on vda, mounted dax", facts{statfs: ext4, dev: unix.Mkdev(253, 1), mount: &mountEntry{FSType: "ext4", SuperOpts: []string{"dax"}}}, true,
			KindFsDax, SurvivesRestart, true, ""},
		{"no mount found and no statx: not DAX, said so", facts{statfs: ext4, dev: unix.Mkdev(254, 1), mountErr: os.ErrNotExist}, true,
			KindFile, SurvivesRestart, false, "cannot tell whether this is DAX"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := Spec{Name: "ram0", Size: 2 * mib, Backing: "/x/ram0", Shared: true}
			b, err := classifyRegular(spec, h, &tc.f, tc.exists)
			require.NoError(t, err)
			require.Equal(t, tc.kind, b.Kind)
			require.Equal(t, tc.class, b.Class)
			require.Equal(t, tc.mapSync, b.mapFlags&unix.MAP_SYNC != 0, "MAP_SYNC")
			if tc.noteMatch != "" {
				require.Contains(t, strings.Join(b.Notes, "; "), tc.noteMatch)
			}
			if tc.kind == KindFsDax && tc.class != SurvivesKexec {
				require.Contains(t, modeVerdict(memspec.ModeReboot, b), "not persistent memory")
			}
		})
	}
}

// A real file on this machine's ordinary filesystem: statx knows the DAX
// attribute and says no, so the file is not fsdax, and reboot mode refuses
// it.
func TestStatxRealFileNotDAX(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ram0")
	writeFile(t, path, 2*mib)
	var stx unix.Statx_t
	require.NoError(t, unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_BASIC_STATS, &stx))
	require.NotZero(t, stx.Attributes_mask&unix.STATX_ATTR_DAX, "kernel reports STATX_ATTR_DAX support (5.8+)")
	require.Zero(t, stx.Attributes&unix.STATX_ATTR_DAX, "a file on %s is not DAX", path)

	spec := Spec{Name: "ram0", Size: 2 * mib, Backing: path, Shared: true, Mode: memspec.ModeReboot}
	b, err := Probe(spec)
	require.NoError(t, err)
	require.NotEqual(t, KindFsDax, b.Kind)
	require.Equal(t, SurvivesRestart, b.Class)
	require.Equal(t, fileStat(t, path).Ino, b.Ino)
	_, err = Check(spec)
	require.ErrorIs(t, err, ErrModeRefused)
	require.ErrorContains(t, err, `memory block "ram0" (`+path+`) survives a VMM restart but not a host kexec: mode reboot needs memory that survives a host kexec`)
}
