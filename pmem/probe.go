package pmem

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// Identity names a backing so that a later run (after a VMM restart or a
// host kexec) can tell it is the same memory. Dev and Ino come from fstat;
// for a device-dax instance Dev/Ino are those of the device node (devtmpfs
// makes a new node at boot), so across a kexec compare DaxUUID, Rdev and
// Size instead.
type Identity struct {
	Kind    Kind   `json:"kind"`
	Path    string `json:"path,omitempty"`
	Dev     uint64 `json:"dev,omitempty"`  // st_dev of the file or device node
	Ino     uint64 `json:"ino,omitempty"`  // st_ino
	Rdev    uint64 `json:"rdev,omitempty"` // device number of a device-dax instance
	Size    uint64 `json:"size"`           // bytes mapped: the block size
	Align   uint64 `json:"align"`          // mapping alignment (host virtual address and size)
	DaxUUID string `json:"dax_uuid,omitempty"`
}

// Backing is what pmem learned about a block's backing by looking at it
// (stat, statfs, statx, sysfs, mountinfo), without mapping, locking or
// creating anything.
type Backing struct {
	Identity
	Class   Class
	Exists  bool   // false: a file that Open will create (create = true)
	FSType  string // the filesystem ("tmpfs", "hugetlbfs", "ext4", ...); "" for anonymous, memfd, devdax
	DevSize uint64 // size of the existing file or device-dax instance
	// OptIn: classified SurvivesKexec only because the block says
	// preserved_across_kexec = true. The VMM should log it.
	OptIn bool
	// Notes are facts worth showing the operator ("DAX per statx",
	// "uses the first 512MiB of 4GiB").
	Notes []string

	mapFlags  int    // flags for mmap beyond MAP_SHARED (MAP_SYNC on fsdax)
	daxWhyNot string // fsdax not on pmem: why
}

func (b *Backing) note(format string, args ...any) {
	b.Notes = append(b.Notes, fmt.Sprintf(format, args...))
}

// Probe looks at the backing spec describes, without creating, opening,
// mapping or locking anything, and checks that the block fits it:
// size and alignment, the preserved_across_kexec opt-in, and (for a missing
// file) that the config allows creating it. It does not judge the mode: see
// Check. Errors name the block and its backing and say what to do.
func Probe(spec Spec) (*Backing, error) {
	if err := spec.check(); err != nil {
		return nil, err
	}
	b := describeSpecial(spec)
	if b == nil {
		var err error
		if b, err = probePath(spec); err != nil {
			return nil, err
		}
	}
	if err := finish(spec, b); err != nil {
		return nil, err
	}
	return b, nil
}

// describeSpecial describes an anonymous or memfd backing, which the spec
// alone defines; nil for a path backing, which must be looked at.
func describeSpecial(spec Spec) *Backing {
	switch spec.kind() {
	case KindAnonymous:
		b := &Backing{Identity: Identity{Kind: KindAnonymous}, Class: Volatile, Exists: true}
		if spec.Shared {
			b.note("shared anonymous memory still dies with the process")
		}
		return b
	case KindMemfd:
		b := &Backing{Identity: Identity{Kind: KindMemfd}, Class: SurvivesRestart, Exists: true}
		b.note("created at start; survives a restart only when the new VMM inherits its descriptor")
		return b
	}
	return nil
}

// finish fills in what every kind shares, applies the opt-in and checks that
// the block fits the backing.
func finish(spec Spec, b *Backing) error {
	b.Size = spec.Size
	b.Path = spec.path()
	if b.Align == 0 {
		b.Align = DefaultAlign
	}
	if spec.PreservedAcrossKexec {
		if b.Kind != KindTmpfs {
			return spec.errorf("preserved_across_kexec = true is only for files on tmpfs or /dev/shm (an explicit opt-in for hosts that preserve them across kexec); this backing is %s, classified %s on its own: remove the setting", b.kindPhrase(), b.Class)
		}
		b.Class, b.OptIn = SurvivesKexec, true
		b.note("preserved_across_kexec = true: trusting the host to keep this tmpfs memory across a kexec")
	}
	return fit(spec, b)
}

func (b *Backing) kindPhrase() string {
	switch b.Kind {
	case KindDevDax:
		return "device-dax"
	case KindFsDax:
		return "a file on a DAX filesystem"
	case KindHugetlbfs:
		return "a hugetlbfs file"
	case KindTmpfs:
		return "a tmpfs file"
	case KindFile:
		return "a file on " + orUnknown(b.FSType)
	}
	return string(b.Kind)
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown filesystem"
	}
	return s
}

// fit checks size and alignment against the backing, before anything is
// mapped. An existing file must be exactly the block size (pmem never
// resizes it); a device-dax instance must be at least the block size.
func fit(spec Spec, b *Backing) error {
	if spec.Size%b.Align != 0 {
		what := "alignment"
		switch b.Kind {
		case KindHugetlbfs:
			what = "huge page size"
		case KindDevDax:
			what = "device-dax alignment"
		}
		return spec.refuse(ErrMisfit, "size %s is not a multiple of the backing's %s %s; make size a multiple of %s",
			memspec.FormatSize(spec.Size), what, memspec.FormatSize(b.Align), memspec.FormatSize(b.Align))
	}
	switch {
	case b.Kind == KindDevDax:
		if spec.Size > b.DevSize {
			return spec.refuse(ErrMisfit, "device-dax %s holds %s, less than the %s in the config; use a size of at most %s, or a larger namespace",
				spec.Backing, memspec.FormatSize(b.DevSize), memspec.FormatSize(spec.Size), memspec.FormatSize(b.DevSize&^(b.Align-1)))
		}
		if spec.Size < b.DevSize {
			b.note("uses the first %s of the %s device", memspec.FormatSize(spec.Size), memspec.FormatSize(b.DevSize))
		}
	case b.Exists && spec.path() != "":
		if err := checkSize(spec, b.DevSize); err != nil {
			return err
		}
	}
	return nil
}

// ErrMisfit is wrapped when the block's size or alignment does not fit its
// backing (a device-dax instance too small, a size that is not a multiple of
// the huge page size or device alignment).
var ErrMisfit = errors.New("memory block does not fit its backing")

// probeCount counts classifications of existing backings, by path
// (probePath) and through a descriptor (Open), so that a test can hold
// Open to one look at what it maps.
var probeCount struct{ byPath, byFD atomic.Int64 }

// probePath probes a path backing: an existing file or device, or a file to
// be created.
func probePath(spec Spec) (*Backing, error) {
	probeCount.byPath.Add(1)
	h := spec.hostOrReal()
	path := spec.Backing
	var st unix.Stat_t
	err := unix.Stat(path, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return probeNew(spec, h)
	case err != nil:
		return nil, spec.errorf("stat: %w", err)
	}
	if err := unix.Access(path, unix.R_OK|unix.W_OK); err != nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, spec.errorf("cannot be opened for reading and writing by this user: %w", err)
	}
	return inspect(spec, h, -1, &st)
}

// devDaxName matches device-dax node names: pmem never creates a file there.
var devDaxName = regexp.MustCompile(`^dax[0-9]+\.[0-9]+$`)

// probeNew classifies a file that does not exist yet from its directory.
func probeNew(spec Spec, h *host) (*Backing, error) {
	path := spec.Backing
	dir := filepath.Dir(path)
	if devDaxName.MatchString(filepath.Base(path)) {
		return nil, spec.refuse(fs.ErrNotExist, "device-dax %s does not exist; create the namespace (ndctl create-namespace -m devdax) or fix backing: pmvm never creates device nodes", path)
	}
	if !spec.Create {
		return nil, spec.refuse(fs.ErrNotExist, "backing file does not exist; set create = true in the config to create it, or create it yourself (truncate -s %s %s)",
			memspec.FormatSize(spec.Size), path)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, spec.refuse(fs.ErrNotExist, "cannot create the file: directory %s does not exist", dir)
		}
		return nil, spec.errorf("stat directory %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, spec.errorf("cannot create the file: %s is not a directory", dir)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return nil, spec.errorf("cannot create the file: directory %s is not writable by this user: %w", dir, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		return nil, spec.errorf("statfs %s: %w", dir, err)
	}
	f := facts{statfs: sfs, dev: st.Dev}
	f.mount, f.mountErr = lookupMount(h, dir, 0, st.Dev)
	if f.mount != nil && f.mount.FSType == "devtmpfs" {
		return nil, spec.errorf("refusing to create a file in %s (devtmpfs); device backings must exist: create the device (ndctl create-namespace -m devdax) or fix backing", dir)
	}
	b, err := classifyRegular(spec, h, &f, false)
	if err != nil {
		return nil, err
	}
	b.note("does not exist yet: created at start (create = true)")
	return b, nil
}

// facts are what the kernel says about a regular file (or the directory a
// new file will be created in).
type facts struct {
	statfs   unix.Statfs_t
	dev      uint64 // st_dev
	ino      uint64
	size     int64
	daxKnown bool // statx reports STATX_ATTR_DAX in attributes_mask
	dax      bool // statx says the file uses DAX
	mount    *mountEntry
	mountErr error
}

// inspect classifies the existing file or device whose stat is st: through
// fd when fd >= 0 (the file Open holds; the authoritative answer), else
// through spec.Backing.
func inspect(spec Spec, h *host, fd int, st *unix.Stat_t) (*Backing, error) {
	if fd >= 0 {
		probeCount.byFD.Add(1)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFCHR:
		return inspectDevDax(spec, h, st)
	default:
		return nil, refuseFileType(spec, st)
	}
	f := facts{dev: st.Dev, ino: st.Ino, size: st.Size}
	var stx unix.Statx_t
	var err error
	if fd >= 0 {
		err = unix.Fstatfs(fd, &f.statfs)
		if err == nil {
			err = unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS|unix.STATX_MNT_ID, &stx)
		}
	} else {
		err = unix.Statfs(spec.Backing, &f.statfs)
		if err == nil {
			err = unix.Statx(unix.AT_FDCWD, spec.Backing, 0, unix.STATX_BASIC_STATS|unix.STATX_MNT_ID, &stx)
		}
	}
	if err != nil {
		return nil, spec.errorf("statfs/statx: %w", err)
	}
	if stx.Attributes_mask&unix.STATX_ATTR_DAX != 0 {
		f.daxKnown = true
		f.dax = stx.Attributes&unix.STATX_ATTR_DAX != 0
	}
	var mntID uint64
	if stx.Mask&unix.STATX_MNT_ID != 0 {
		mntID = stx.Mnt_id
	}
	real, err := filepath.EvalSymlinks(spec.Backing)
	if err != nil {
		real = spec.Backing
	}
	f.mount, f.mountErr = lookupMount(h, real, mntID, st.Dev)
	return classifyRegular(spec, h, &f, true)
}

// refuseFileType refuses what is neither a regular file nor a character
// device (which inspectDevDax judges).
func refuseFileType(spec Spec, st *unix.Stat_t) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFCHR:
		return nil
	case unix.S_IFDIR:
		return spec.errorf("is a directory; backing must name a file or a device-dax device")
	case unix.S_IFBLK:
		return spec.errorf("is a block device; pmvm maps persistent memory as device-dax (ndctl create-namespace -m devdax, then /dev/daxX.Y) or as a file on a DAX filesystem (-m fsdax, mount -o dax=always)")
	default:
		return spec.errorf("is not a regular file or a device-dax device (mode %#o)", st.Mode&unix.S_IFMT)
	}
}

// refuseBeforeOpen refuses, from a stat of the path, what Open must not
// even open: a directory, a block device, a character device that is not a
// device-dax instance (opening some devices acts: a watchdog starts). It is
// a guard, not a probe: Open classifies the backing through the descriptor
// it opens next. A missing or unreadable path is left to the open, which
// says what is wrong.
func refuseBeforeOpen(spec Spec, h *host) error {
	var st unix.Stat_t
	if err := unix.Stat(spec.Backing, &st); err != nil {
		return nil
	}
	if st.Mode&unix.S_IFMT == unix.S_IFCHR {
		_, err := inspectDevDax(spec, h, &st)
		return err
	}
	return refuseFileType(spec, &st)
}

// lookupMount finds the mount holding path in the host's mountinfo.
func lookupMount(h *host, path string, mntID, dev uint64) (*mountEntry, error) {
	mi, err := os.Open(h.mountinfo)
	if err != nil {
		return nil, err
	}
	defer mi.Close()
	entries, err := parseMountinfo(mi)
	if err != nil {
		return nil, err
	}
	e := findMount(entries, path, mntID, unix.Major(dev), unix.Minor(dev))
	if e == nil {
		return nil, fmt.Errorf("no mount in %s holds %s", h.mountinfo, path)
	}
	return e, nil
}

// classifyRegular classifies a regular file (exists) or the directory a new
// one will be created in (!exists) from what the kernel said about it.
func classifyRegular(spec Spec, h *host, f *facts, exists bool) (*Backing, error) {
	b := &Backing{Exists: exists}
	b.Dev, b.Ino = f.dev, f.ino
	if exists {
		b.DevSize = uint64(f.size)
	}
	if f.mount != nil {
		b.FSType = f.mount.FSType
	}
	switch uint32(f.statfs.Type) {
	case unix.HUGETLBFS_MAGIC:
		b.Kind, b.Class, b.FSType = KindHugetlbfs, SurvivesRestart, "hugetlbfs"
		page := uint64(f.statfs.Bsize)
		if page == 0 || page&(page-1) != 0 {
			return nil, spec.errorf("hugetlbfs reports a page size of %d bytes; cannot map it", f.statfs.Bsize)
		}
		b.Align = max(uint64(DefaultAlign), page)
		if f.mount != nil && mountOption(f.mount, "pagesize") != "" {
			b.note("huge page size %s (statfs; mount option pagesize=%s)", memspec.FormatSize(page), mountOption(f.mount, "pagesize"))
		} else {
			b.note("huge page size %s (statfs)", memspec.FormatSize(page))
		}
		return b, nil
	case unix.TMPFS_MAGIC:
		b.Kind, b.Class = KindTmpfs, SurvivesRestart
		if b.FSType == "" {
			b.FSType = "tmpfs"
		}
		return b, nil
	}

	// An ordinary or DAX filesystem. statx answers for an existing file;
	// the mount options are the fallback (kernels before 5.8, and a file
	// that does not exist yet).
	b.Kind, b.Class = KindFile, SurvivesRestart
	var dax bool
	switch {
	case exists && f.daxKnown:
		dax = f.dax
		if dax {
			b.note("DAX per statx (STATX_ATTR_DAX)")
		}
	case f.mount != nil:
		switch daxOption(f.mount) {
		case daxAlways:
			dax = true
			b.note("DAX per the mount option %s", daxAlways)
		case daxInode:
			b.note("mounted dax=inode: whether the new file uses DAX is known only once it exists; create it (with the DAX flag inherited from its directory) and check again")
		}
	default:
		b.note("cannot tell whether this is DAX: %v", f.mountErr)
	}
	if !dax {
		return b, nil
	}
	b.Kind = KindFsDax
	// MAP_SYNC makes every page fault commit the file's metadata (block
	// allocation, unwritten-extent conversion) before the guest can write
	// the page: without it a kexec could lose the allocation and so the
	// data.
	b.mapFlags = unix.MAP_SYNC
	ok, why := isPmemBlock(h.sys, unix.Major(f.dev), unix.Minor(f.dev))
	if ok {
		b.Class = SurvivesKexec
		b.note("on persistent memory (%s)", why)
	} else {
		b.daxWhyNot = why
	}
	return b, nil
}

// inspectDevDax classifies a character device: only device-dax is accepted.
func inspectDevDax(spec Spec, h *host, st *unix.Stat_t) (*Backing, error) {
	maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	info, err := readDevDax(h.sys, maj, min)
	if errors.Is(err, errNotDax) {
		return nil, spec.errorf("is a character device (%d:%d) but %w; the only devices pmvm maps are device-dax instances (/dev/daxX.Y)", maj, min, err)
	}
	if err != nil {
		return nil, spec.errorf("device-dax %d:%d: %w", maj, min, err)
	}
	b := &Backing{Exists: true, Class: SurvivesKexec, DevSize: info.Size}
	b.Kind, b.Dev, b.Ino, b.Rdev, b.DaxUUID = KindDevDax, st.Dev, st.Ino, st.Rdev, info.UUID
	b.Align = max(uint64(DefaultAlign), info.Align)
	b.note("device-dax %s (%s), align %s", info.Name, info.Dir, memspec.FormatSize(info.Align))
	if info.UUID == "" {
		b.note("no namespace uuid in sysfs (%s/../uuid): identity falls back to the device number", info.Dir)
	}
	if spec.Create {
		b.note("create = true is ignored: a device is never created")
	}
	return b, nil
}

// Check probes every block, without creating, mapping or locking anything,
// and judges each against its Spec.Mode: reboot needs SurvivesKexec,
// restart needs SurvivesRestart or better, none accepts all. The Report
// always covers every block, in order; the error is nil when every block is
// accepted, else it joins one error per refused block (wrapping
// ErrModeRefused, ErrMisfit, ErrSizeMismatch or fs.ErrNotExist as fits).
//
// The VMM calls it before mapping anything, so that a VM whose memory
// cannot honour its mode is refused as a whole, naming every bad block.
func Check(specs ...Spec) (Report, error) { return check(true, specs) }

// Verdicts is Check without the "in use by" notes, which cost a read of
// /proc/locks: for a VMM about to lock the backings itself, where a holder
// is named by the refusal anyway. The report's Align of each block is the
// alignment Open will give its mapping, which the VMM also gives the
// block's guest-physical address.
func Verdicts(specs ...Spec) (Report, error) {
	return check(false, specs)
}

func check(notes bool, specs []Spec) (Report, error) {
	rep := Report{Mode: memspec.ModeNone, OK: true, Blocks: []BlockReport{}}
	if len(specs) > 0 {
		rep.Mode = specs[0].Mode.OrDefault()
	}
	var errs []error
	for _, spec := range specs {
		br, err := checkOne(spec, notes)
		if err != nil {
			rep.OK = false
			errs = append(errs, err)
		}
		rep.Blocks = append(rep.Blocks, br)
	}
	return rep, errors.Join(errs...)
}

func checkOne(spec Spec, notes bool) (BlockReport, error) {
	br := BlockReport{Block: spec.Name, Backing: spec.Backing, Kind: spec.kind(), Size: spec.Size}
	b, err := Probe(spec)
	if err == nil {
		br.Kind, br.Align, br.Class, br.Missing, br.Notes = b.Kind, b.Align, b.Class, !b.Exists, b.Notes
		id := b.Identity
		br.Identity = &id
		err = spec.judge(b)
	}
	if err != nil {
		br.Reason = strings.TrimPrefix(err.Error(), spec.prefix())
		br.Reason = strings.TrimLeft(br.Reason, ": ")
		return br, err
	}
	br.OK = true
	if !notes {
		return br, nil
	}
	if holder := holderOf(spec.hostOrReal(), spec.LockDir, b); holder != "" {
		br.Notes = append(br.Notes, "in use by "+holder+": a second VM on it would be refused")
	}
	return br, nil
}

// Report is the verdict of Check on every memory block of a VM.
type Report struct {
	Mode   memspec.Mode  `json:"mode"`
	OK     bool          `json:"ok"` // every block accepted
	Blocks []BlockReport `json:"blocks"`
}

// BlockReport is the verdict on one memory block.
type BlockReport struct {
	Block   string `json:"block"`
	Backing string `json:"backing"` // as configured
	Kind    Kind   `json:"kind"`
	Size    uint64 `json:"size"`            // bytes
	Align   uint64 `json:"align,omitempty"` // bytes; 0 when the probe failed
	Class   Class  `json:"class,omitempty"` // "" when the probe failed
	// Missing: the file does not exist yet; Open will create it
	// (create = true).
	Missing bool `json:"missing,omitempty"`
	OK      bool `json:"ok"`
	// Reason says why the block is refused and what to use instead.
	Reason   string    `json:"reason,omitempty"`
	Notes    []string  `json:"notes,omitempty"`
	Identity *Identity `json:"identity,omitempty"`
}
