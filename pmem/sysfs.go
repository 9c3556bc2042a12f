package pmem

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// host says where pmem looks at the host. Tests point it at fixtures; a nil
// *host means the real one.
type host struct {
	sys       string // sysfs root: "/sys"
	proc      string // procfs root: "/proc" (for <pid>/comm)
	mountinfo string // "/proc/self/mountinfo"
	locks     string // "/proc/locks"
}

var realHost = &host{sys: "/sys", proc: "/proc", mountinfo: "/proc/self/mountinfo", locks: "/proc/locks"}

// daxInfo is what sysfs says about one device-dax instance.
//
// The layout, on Linux 5.10+ (6.1 included), for /dev/dax0.0 made by
// `ndctl create-namespace -m devdax` (the dax_pmem driver):
//
//	/sys/dev/char/MAJ:MIN -> ../../devices/.../ndbus0/region0/dax0.0/dax0.0
//	    that directory is the dev_dax device (bus "dax", drivers/dax/bus.c):
//	    subsystem -> .../bus/dax
//	    size       bytes, decimal ("%llu")
//	    align      bytes, decimal ("%d"); read-only on static (pmem) regions
//	  ..          the parent is the libnvdimm nd_dax device, also named dax0.0
//	    uuid       the dax info-block uuid: what `ndctl list` prints as the
//	               devdax namespace's "uuid"; stable across reboot and kexec
//	    namespace  the namespace it claims, e.g. "namespace0.0"
//	    dax_region/align, dax_region/size   the region (pre-5.10 kernels had
//	               no per-device align: the region's is used then)
//	/sys/bus/nd/devices/namespaceX.Y/uuid   the namespace's own (label) uuid;
//	               absent for label-less (e820 / memmap=) namespaces
//
// The same device is /sys/bus/dax/devices/daxX.Y; pmem goes through
// /sys/dev/char because the device number is what stat gives.
type daxInfo struct {
	Name      string // "dax0.0"
	Dir       string // the resolved sysfs directory of the dev_dax device
	Size      uint64 // bytes
	Align     uint64 // bytes; mmap offsets and lengths must be multiples
	UUID      string // "" when sysfs has none
	UUIDFrom  string // the sysfs file the uuid came from
	Namespace string // "namespace0.0", when known
}

// errNotDax is wrapped when a character device is not device-dax.
var errNotDax = errors.New("not a device-dax instance")

// readDevDax reads the sysfs attributes of the character device maj:min
// under sysRoot (normally "/sys"). It refuses a device whose sysfs
// subsystem is not "dax".
func readDevDax(sysRoot string, maj, min uint32) (*daxInfo, error) {
	link := filepath.Join(sysRoot, "dev", "char", fmt.Sprintf("%d:%d", maj, min))
	// Resolve first: ".." must be taken in the real tree, not lexically on
	// the symlink (filepath.Join would turn dev/char/X/.. into dev/char).
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return nil, fmt.Errorf("%w: no sysfs entry %s (%v)", errNotDax, link, unwrapPath(err))
	}
	sub, err := filepath.EvalSymlinks(filepath.Join(dir, "subsystem"))
	if err != nil {
		return nil, fmt.Errorf("%w: cannot read %s/subsystem: %v", errNotDax, dir, unwrapPath(err))
	}
	if filepath.Base(sub) != "dax" {
		return nil, fmt.Errorf("%w: its sysfs subsystem is %q", errNotDax, filepath.Base(sub))
	}
	info := &daxInfo{Name: filepath.Base(dir), Dir: dir}
	if info.Size, err = readSysUint(filepath.Join(dir, "size")); err != nil {
		return nil, err
	}
	parent := filepath.Dir(dir)
	info.Align, err = readSysUint(filepath.Join(dir, "align"))
	if errors.Is(err, fs.ErrNotExist) {
		info.Align, err = readSysUint(filepath.Join(parent, "dax_region", "align"))
	}
	if err != nil {
		return nil, err
	}
	if info.Align == 0 || info.Align&(info.Align-1) != 0 {
		return nil, fmt.Errorf("device-dax %s: alignment %d is not a power of two", info.Name, info.Align)
	}
	info.Namespace = readSysString(filepath.Join(parent, "namespace"))
	for _, p := range []string{
		filepath.Join(parent, "uuid"),
		nsUUIDPath(sysRoot, info.Namespace),
	} {
		if p == "" {
			continue
		}
		if u := readSysString(p); u != "" && u != "00000000-0000-0000-0000-000000000000" {
			info.UUID, info.UUIDFrom = u, p
			break
		}
	}
	return info, nil
}

func nsUUIDPath(sysRoot, ns string) string {
	if ns == "" || strings.ContainsAny(ns, "/\x00") || ns == ".." || ns == "." {
		return ""
	}
	return filepath.Join(sysRoot, "bus", "nd", "devices", ns, "uuid")
}

// isPmemBlock reports whether the block device maj:min is persistent memory:
// a libnvdimm pmem disk (pmemX, pmemXpY, its sysfs path under an ndbus) or a
// device-mapper/md device all of whose slaves are.
func isPmemBlock(sysRoot string, maj, min uint32) (bool, string) {
	dir, err := filepath.EvalSymlinks(filepath.Join(sysRoot, "dev", "block", fmt.Sprintf("%d:%d", maj, min)))
	if err != nil {
		return false, fmt.Sprintf("its device %d:%d is no block device in sysfs, so not persistent memory", maj, min)
	}
	return pmemDir(dir, 0)
}

func pmemDir(dir string, depth int) (bool, string) {
	name := filepath.Base(dir)
	if strings.HasPrefix(name, "pmem") || strings.Contains(dir, "/ndbus") {
		return true, name
	}
	slaves, _ := os.ReadDir(filepath.Join(dir, "slaves"))
	if len(slaves) == 0 || depth > 8 {
		return false, fmt.Sprintf("its device %s is not persistent memory", name)
	}
	for _, s := range slaves {
		// Slaves are links to other block devices' directories (or, for
		// partitions, the disk's).
		real, err := filepath.EvalSymlinks(filepath.Join(dir, "slaves", s.Name()))
		if err != nil {
			return false, fmt.Sprintf("cannot resolve %s's slave %s", name, s.Name())
		}
		if ok, _ := pmemDir(real, depth+1); !ok {
			return false, fmt.Sprintf("its device %s sits on %s, which is not persistent memory", name, s.Name())
		}
	}
	return true, name
}

func readSysUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, unwrapPath(err))
	}
	s := strings.TrimSpace(string(b))
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("read %s: %q is not a number", path, s)
	}
	return v, nil
}

// readSysString returns the trimmed content of a sysfs file, or "" when it
// cannot be read.
func readSysString(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
