package kexec

// Each restored VM's pmvm process runs in a cgroup of its own, with the
// host config's [limits]. The cgroup filesystem is driven directly (mkdir,
// a few control files, cgroup.procs, rmdir): it is the same on every host
// pmvm targets and needs no dependency. The layout follows containerd's
// cgroups package: on cgroup v2 (unified) one directory with cpu.weight,
// memory.max and pids.max, the controllers enabled down the path; on v1 and
// hybrid hosts (v1 controllers, v2 mounted at /sys/fs/cgroup/unified
// without controllers) one directory per controller, like
// cgroup1.StaticPath, with cpu.shares, memory.limit_in_bytes and pids.max.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/configs"
)

// CgroupMode is the host's cgroup layout, as containerd's cgroups.Mode.
type CgroupMode int

const (
	CgroupUnavailable CgroupMode = iota // no cgroup filesystem found
	CgroupLegacy                        // v1 only
	CgroupHybrid                        // v1 controllers, v2 mounted beside them (no controllers)
	CgroupUnified                       // v2 only
)

func (m CgroupMode) String() string {
	switch m {
	case CgroupLegacy:
		return "v1 (legacy)"
	case CgroupHybrid:
		return "v1 (hybrid, v2 at /sys/fs/cgroup/unified)"
	case CgroupUnified:
		return "v2 (unified)"
	}
	return "unavailable"
}

// cgroupRoot is where the hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// DetectCgroupMode looks at the filesystem mounted at /sys/fs/cgroup.
func DetectCgroupMode() CgroupMode {
	var st unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &st); err != nil {
		return CgroupUnavailable
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return CgroupUnified
	}
	if err := unix.Statfs(filepath.Join(cgroupRoot, "unified"), &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return CgroupHybrid
	}
	mounts, err := cgroupMounts()
	if err == nil && len(mounts.v1) > 0 {
		return CgroupLegacy
	}
	return CgroupUnavailable
}

// CgroupLimits are the limits written into a VM's cgroup; zero leaves one
// unset.
type CgroupLimits struct {
	CPUWeight uint64 // cgroup v2 cpu.weight 1..10000; v1 cpu.shares = weight*1024/100
	MemoryMax uint64 // bytes
	PidsMax   int64  // tasks (threads)
}

// pidsHeadroom is the threads pmvm needs besides one per vCPU (the Go
// runtime, the control and agent sockets, blocking syscalls).
const pidsHeadroom = 64

// MinPids is the least pids limit VM cfg can run under.
func MinPids(cfg *configs.VM) int64 { return int64(cfg.VCPUs) + pidsHeadroom }

// LimitsFor returns the cgroup limits of VM cfg under the host's [limits]:
// memory = guest RAM + vmm_memory_overhead when the overhead is set.
func LimitsFor(cfg *configs.VM, l configs.Limits) CgroupLimits {
	lim := CgroupLimits{CPUWeight: l.CPUWeight, PidsMax: l.Pids}
	if l.VMMMemoryOverhead > 0 {
		lim.MemoryMax = cfg.TotalMemory() + uint64(l.VMMMemoryOverhead)
	}
	return lim
}

// CPUShares converts a cgroup v2 cpu.weight to v1 cpu.shares keeping the
// defaults equal (100 -> 1024), within v1's range 2..262144.
func CPUShares(weight uint64) uint64 {
	s := weight * 1024 / 100
	if s < 2 {
		s = 2
	}
	if s > 262144 {
		s = 262144
	}
	return s
}

// Cgroup is one VM's cgroup: one directory on v2, one per controller on v1.
type Cgroup struct {
	Name string     // the VM
	Mode CgroupMode // the layout it was created in
	Path string     // the cgroup path inside each hierarchy ("/pmvm/web1")
	// Dirs maps each controller ("" on v2) to the directory of the cgroup.
	Dirs map[string]string
	// created are the directories NewCgroup made, deepest last.
	created []string
}

// v1Controllers are the v1 hierarchies a VM cgroup is created in.
var v1Controllers = []string{"cpu", "memory", "pids"}

// NewCgroup creates (or reuses, if it exists and holds no process) the
// cgroup of VM name under parent and writes lim into it. parent "" means
// "/pmvm.slice" on v2 and "/pmvm" on v1; a parent without a leading "/" is
// under the cgroup this process runs in. The VM's cgroup is
// parent/<name>.scope on v2 and parent/<name> on v1.
func NewCgroup(name, parent string, lim CgroupLimits) (*Cgroup, error) {
	mode := DetectCgroupMode()
	if mode == CgroupUnavailable {
		return nil, errors.New("cgroups: no cgroup filesystem at /sys/fs/cgroup; mount one, or set [limits] cgroups = false in the host config")
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	c := &Cgroup{Name: name, Mode: mode, Dirs: map[string]string{}}
	if mode == CgroupUnified {
		err = c.createV2(mounts, own, parent, lim)
	} else {
		err = c.createV1(mounts, own, parent, lim)
	}
	if err != nil {
		c.Delete()
		return nil, err
	}
	return c, nil
}

func (c *Cgroup) createV2(mounts *mountSet, own map[string]string, parent string, lim CgroupLimits) error {
	m := mounts.v2
	if m == nil {
		return errors.New("cgroups: cgroup v2 is not mounted")
	}
	if parent == "" {
		parent = "/pmvm.slice"
	}
	cgParent := resolveParent(parent, own[""])
	c.Path = path.Join(cgParent, c.Name+".scope")
	dir, err := m.dir(c.Path)
	if err != nil {
		return err
	}
	// Enable the controllers the limits need at every level from the
	// mount's root down to the parent, then create the leaf.
	need := []string{}
	if lim.CPUWeight > 0 {
		need = append(need, "cpu")
	}
	if lim.MemoryMax > 0 {
		need = append(need, "memory")
	}
	if lim.PidsMax > 0 {
		need = append(need, "pids")
	}
	parentDir, _ := m.dir(cgParent)
	if err := c.mkdirs(m.mountpoint, parentDir); err != nil {
		return err
	}
	levels := []string{m.mountpoint}
	if rel, err := filepath.Rel(m.mountpoint, parentDir); err == nil && rel != "." {
		d := m.mountpoint
		for _, part := range strings.Split(rel, "/") {
			d = filepath.Join(d, part)
			levels = append(levels, d)
		}
	}
	for _, d := range levels {
		if len(need) == 0 {
			break
		}
		avail, _ := os.ReadFile(filepath.Join(d, "cgroup.controllers"))
		for _, ctl := range need {
			if !hasWord(string(avail), ctl) {
				return fmt.Errorf("cgroups: controller %q is not available in %s (cgroup.controllers: %q); a limit needs it", ctl, d, strings.TrimSpace(string(avail)))
			}
			if err := writeFile(filepath.Join(d, "cgroup.subtree_control"), "+"+ctl); err != nil {
				return fmt.Errorf("cgroups: enable %s for the children of %s: %w (a cgroup v2 directory with processes in it cannot enable controllers: choose another cgroup_parent)", ctl, d, err)
			}
		}
	}
	if err := c.mkdirs(parentDir, dir); err != nil {
		return err
	}
	if err := checkEmpty(dir); err != nil {
		return err
	}
	c.Dirs[""] = dir
	var errs []error
	if lim.CPUWeight > 0 {
		errs = append(errs, writeFile(filepath.Join(dir, "cpu.weight"), strconv.FormatUint(lim.CPUWeight, 10)))
	}
	if lim.MemoryMax > 0 {
		errs = append(errs, writeFile(filepath.Join(dir, "memory.max"), strconv.FormatUint(lim.MemoryMax, 10)))
	}
	if lim.PidsMax > 0 {
		errs = append(errs, writeFile(filepath.Join(dir, "pids.max"), strconv.FormatInt(lim.PidsMax, 10)))
	}
	return errors.Join(errs...)
}

func (c *Cgroup) createV1(mounts *mountSet, own map[string]string, parent string, lim CgroupLimits) error {
	if parent == "" {
		parent = "/pmvm"
	}
	needs := map[string]bool{"cpu": lim.CPUWeight > 0, "memory": lim.MemoryMax > 0, "pids": lim.PidsMax > 0}
	var errs []error
	for _, ctl := range v1Controllers {
		m := mounts.v1[ctl]
		if m == nil {
			if needs[ctl] {
				errs = append(errs, fmt.Errorf("cgroups: the v1 %s controller is not mounted; a limit needs it", ctl))
			}
			continue
		}
		cgPath := path.Join(resolveParent(parent, own[ctl]), c.Name)
		if c.Path == "" {
			c.Path = cgPath
		}
		dir, err := m.dir(cgPath)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := c.mkdirs(m.mountpoint, dir); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := checkEmpty(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		c.Dirs[ctl] = dir
		switch {
		case ctl == "cpu" && lim.CPUWeight > 0:
			errs = append(errs, writeFile(filepath.Join(dir, "cpu.shares"), strconv.FormatUint(CPUShares(lim.CPUWeight), 10)))
		case ctl == "memory" && lim.MemoryMax > 0:
			errs = append(errs, writeFile(filepath.Join(dir, "memory.limit_in_bytes"), strconv.FormatUint(lim.MemoryMax, 10)))
		case ctl == "pids" && lim.PidsMax > 0:
			errs = append(errs, writeFile(filepath.Join(dir, "pids.max"), strconv.FormatInt(lim.PidsMax, 10)))
		}
	}
	if len(c.Dirs) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("cgroups: none of the v1 cpu, memory, pids controllers is mounted"))
	}
	return errors.Join(errs...)
}

// mkdirs creates every directory from below base down to dir, recording
// the ones it made.
func (c *Cgroup) mkdirs(base, dir string) error {
	rel, err := filepath.Rel(base, dir)
	if err != nil || rel == "." {
		return err
	}
	d := base
	for _, part := range strings.Split(rel, "/") {
		d = filepath.Join(d, part)
		err := os.Mkdir(d, 0o755)
		switch {
		case err == nil:
			c.created = append(c.created, d)
		case errors.Is(err, os.ErrExist):
		default:
			return fmt.Errorf("cgroups: %w", err)
		}
	}
	return nil
}

// checkEmpty refuses to reuse a cgroup that holds processes: they belong
// to a VM of the same name that still runs.
func checkEmpty(dir string) error {
	pids, err := readPids(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	if len(pids) > 0 {
		return fmt.Errorf("cgroups: %s already holds processes %v (is this VM running already?)", dir, pids)
	}
	return nil
}

// AddProc moves process pid (all its threads) into the cgroup.
func (c *Cgroup) AddProc(pid int) error {
	var errs []error
	for ctl, dir := range c.Dirs {
		if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			errs = append(errs, fmt.Errorf("cgroups: add pid %d to %s (%s): %w", pid, dir, ctlName(ctl), err))
		}
	}
	return errors.Join(errs...)
}

// Procs lists the processes in the cgroup (of its first hierarchy on v1:
// AddProc puts a process in all of them).
func (c *Cgroup) Procs() ([]int, error) {
	for _, ctl := range append([]string{""}, v1Controllers...) {
		if dir, ok := c.Dirs[ctl]; ok {
			return readPids(filepath.Join(dir, "cgroup.procs"))
		}
	}
	return nil, errors.New("cgroups: no directory")
}

// Delete removes the VM's cgroup (which must hold no process any more) and
// the parent directories NewCgroup created, if they are empty.
func (c *Cgroup) Delete() error {
	var errs []error
	for ctl, dir := range c.Dirs {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cgroups: remove %s (%s): %w", dir, ctlName(ctl), err))
		}
	}
	for i := len(c.created) - 1; i >= 0; i-- {
		os.Remove(c.created[i]) // parents shared with other VMs stay (EBUSY)
	}
	return errors.Join(errs...)
}

// Dir is the cgroup's directory on v2, or of the given v1 controller.
func (c *Cgroup) Dir(controller string) string {
	if c.Mode == CgroupUnified {
		return c.Dirs[""]
	}
	return c.Dirs[controller]
}

func (c *Cgroup) String() string {
	if c.Mode == CgroupUnified {
		return c.Dirs[""]
	}
	var parts []string
	for _, ctl := range v1Controllers {
		if d, ok := c.Dirs[ctl]; ok {
			parts = append(parts, d)
		}
	}
	return strings.Join(parts, ", ")
}

func ctlName(ctl string) string {
	if ctl == "" {
		return "v2"
	}
	return ctl
}

// resolveParent makes parent absolute: a relative parent is under own (this
// process's cgroup path in the hierarchy).
func resolveParent(parent, own string) string {
	if strings.HasPrefix(parent, "/") {
		return path.Clean(parent)
	}
	if own == "" {
		own = "/"
	}
	return path.Join(own, parent)
}

// cgroupMount is one mounted hierarchy.
type cgroupMount struct {
	mountpoint string
	root       string // the cgroup path mounted there ("/" unless in a container)
}

// dir is the directory of cgroup path cg in this mount.
func (m *cgroupMount) dir(cg string) (string, error) {
	rel := cg
	if m.root != "/" {
		if cg != m.root && !strings.HasPrefix(cg, m.root+"/") {
			return "", fmt.Errorf("cgroups: %s is outside the part of the hierarchy mounted at %s (%s)", cg, m.mountpoint, m.root)
		}
		rel = strings.TrimPrefix(cg, m.root)
	}
	return filepath.Join(m.mountpoint, rel), nil
}

type mountSet struct {
	v2 *cgroupMount
	v1 map[string]*cgroupMount // controller -> mount
}

// cgroupMounts reads /proc/self/mountinfo for cgroup hierarchies.
func cgroupMounts() (*mountSet, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	defer f.Close()
	return parseCgroupMounts(f)
}

func parseCgroupMounts(r io.Reader) (*mountSet, error) {
	ms := &mountSet{v1: map[string]*cgroupMount{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+3 > len(fields) {
			continue
		}
		fstype := fields[sep+1]
		m := &cgroupMount{root: unescapeOctal(fields[3]), mountpoint: unescapeOctal(fields[4])}
		switch fstype {
		case "cgroup2":
			if ms.v2 == nil || m.mountpoint == cgroupRoot {
				ms.v2 = m
			}
		case "cgroup":
			for _, opt := range strings.Split(fields[sep+3], ",") {
				if _, dup := ms.v1[opt]; !dup {
					ms.v1[opt] = m
				}
			}
		}
	}
	return ms, sc.Err()
}

// unescapeOctal undoes mountinfo's \040-style escapes.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ownCgroups reads /proc/self/cgroup: controller -> path ("" is v2).
func ownCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	return parseOwnCgroups(string(b)), nil
}

func parseOwnCgroups(s string) map[string]string {
	own := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			own[""] = parts[2]
			continue
		}
		for _, ctl := range strings.Split(parts[1], ",") {
			own[ctl] = parts[2]
		}
	}
	return own
}

func readPids(file string) ([]int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// writeFile writes one value to a cgroup control file (no O_CREAT, no
// truncation semantics: cgroup files take one write).
func writeFile(file, value string) error {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, file, err)
	}
	return nil
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}
