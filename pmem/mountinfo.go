package pmem

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// mountEntry is one line of /proc/<pid>/mountinfo (see proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	ID parent maj:min root mountpoint mountopts [optional...] - fstype source superopts
type mountEntry struct {
	ID, Parent   uint64
	Major, Minor uint32
	Root         string
	MountPoint   string
	MountOpts    []string // per-mount options
	FSType       string
	Source       string
	SuperOpts    []string // per-superblock options: where "dax=always" shows
}

// parseMountinfo reads a mountinfo file. Malformed lines are an error: they
// mean the format is not what this parser understands.
func parseMountinfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		e, err := parseMountLine(line)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w: %q", n, err, line)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

func parseMountLine(line string) (mountEntry, error) {
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 10 || sep < 0 || len(f) < sep+4 {
		return mountEntry{}, fmt.Errorf("too few fields")
	}
	var e mountEntry
	var err error
	if e.ID, err = strconv.ParseUint(f[0], 10, 64); err != nil {
		return e, fmt.Errorf("mount ID: %w", err)
	}
	if e.Parent, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return e, fmt.Errorf("parent ID: %w", err)
	}
	maj, min, ok := strings.Cut(f[2], ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return e, fmt.Errorf("bad major:minor %q", f[2])
	}
	e.Major, e.Minor = uint32(ma), uint32(mi)
	e.Root = unescapeMount(f[3])
	e.MountPoint = unescapeMount(f[4])
	e.MountOpts = strings.Split(f[5], ",")
	e.FSType = f[sep+1]
	e.Source = unescapeMount(f[sep+2])
	e.SuperOpts = strings.Split(f[sep+3], ",")
	return e, nil
}

// unescapeMount undoes the kernel's octal escapes (\040 for a space, \011,
// \012, \134) in mountinfo paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// findMount returns the mount that holds path (an absolute path with no
// symlinks left) on device maj:min. The mount ID from statx, when the
// kernel gives one (mntID != 0), decides alone. Otherwise the deepest mount
// point containing path wins, preferring mounts of the file's own device,
// and among equals the later line (a later mount hides an earlier one at the
// same place). nil when nothing matches.
func findMount(entries []mountEntry, path string, mntID uint64, maj, min uint32) *mountEntry {
	if mntID != 0 {
		for i := range entries {
			if entries[i].ID == mntID {
				return &entries[i]
			}
		}
	}
	best := func(sameDev bool) *mountEntry {
		var b *mountEntry
		for i := range entries {
			e := &entries[i]
			if sameDev && (e.Major != maj || e.Minor != min) {
				continue
			}
			if !under(path, e.MountPoint) {
				continue
			}
			if b == nil || len(e.MountPoint) >= len(b.MountPoint) {
				b = e
			}
		}
		return b
	}
	if e := best(true); e != nil {
		return e
	}
	return best(false)
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	if dir == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// daxMount is what the mount options say about DAX.
type daxMount int

const (
	daxOff    daxMount = iota // no dax option, or dax=never
	daxAlways                 // "dax" (the old ext4/xfs spelling) or "dax=always"
	daxInode                  // "dax=inode": per file (FS_XFLAG_DAX); only statx can tell
)

func (d daxMount) String() string {
	switch d {
	case daxAlways:
		return "dax=always"
	case daxInode:
		return "dax=inode"
	}
	return "no dax"
}

// daxOption reads the DAX mount option from the super options and the
// per-mount options (ext4 and xfs show it among the super options).
func daxOption(e *mountEntry) daxMount {
	d := daxOff
	for _, opts := range [][]string{e.MountOpts, e.SuperOpts} {
		for _, o := range opts {
			switch o {
			case "dax", "dax=always":
				d = daxAlways
			case "dax=inode":
				if d == daxOff {
					d = daxInode
				}
			}
		}
	}
	return d
}

// mountOption returns the value of option name= in the super or per-mount
// options ("pagesize" on hugetlbfs), or "".
func mountOption(e *mountEntry, name string) string {
	for _, opts := range [][]string{e.SuperOpts, e.MountOpts} {
		for _, o := range opts {
			if v, ok := strings.CutPrefix(o, name+"="); ok {
				return v
			}
		}
	}
	return ""
}
