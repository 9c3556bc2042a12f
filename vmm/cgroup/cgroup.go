// Package cgroup puts each VM in a cgroup of its own, with its limits, the
// same whether pmvm run, a unit or pmvm host restore starts it.
//
// Each VM's pmvm process runs in a cgroup of its own (pmvm run moves
// itself there; pmvm host restore starts it there), with the VM config's
// [limits], else the host config's. The cgroups are created, filled and removed
// through github.com/containerd/cgroups/v3: on cgroup v2 (unified) one
// directory with cpu.weight, memory.max and pids.max (cgroup2.NewManager,
// which enables the controllers down the path); on v1 and hybrid hosts (v1
// controllers, v2 mounted at /sys/fs/cgroup/unified without controllers)
// one directory per controller (cgroup1.New over the cpu, memory and pids
// hierarchies that exist) with cpu.shares, memory.limit_in_bytes and
// pids.max. What is kept here is what the library leaves to its caller:
// refusing to reuse a cgroup that still holds a VM, naming the controller
// a limit needs when the hierarchy lacks it, and removing the parent
// directories a VM's cgroup needed once they are empty.
package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem/memspec"
)

// Mode is the host's cgroup layout, as containerd's cgroups.Mode.
type Mode int

const (
	Unavailable Mode = iota // no cgroup filesystem found
	Legacy                  // v1 only
	Hybrid                  // v1 controllers, v2 mounted beside them (no controllers)
	Unified                 // v2 only
)

func (m Mode) String() string {
	switch m {
	case Legacy:
		return "v1 (legacy)"
	case Hybrid:
		return "v1 (hybrid, v2 at /sys/fs/cgroup/unified)"
	case Unified:
		return "v2 (unified)"
	}
	return "unavailable"
}

// cgroupRoot is where the hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// DetectMode is cgroups.Mode, except that a /sys/fs/cgroup on which
// no v1 hierarchy the library can use is mounted is unavailable, not
// legacy.
func DetectMode() Mode {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return Unified
	case cgroups.Hybrid:
		return Hybrid
	case cgroups.Legacy:
		if subs, err := cgroup1.Default(); err == nil && len(subs) > 0 {
			return Legacy
		}
	}
	return Unavailable
}

// v2Mountpoint is where the cgroup v2 hierarchy of a host in mode is
// mounted, "" if it has none.
func v2Mountpoint(mode Mode) string {
	switch mode {
	case Unified:
		return cgroupRoot
	case Hybrid:
		return filepath.Join(cgroupRoot, "unified")
	}
	return ""
}

// Limits are the limits written into a VM's cgroup; zero leaves one
// unset.
type Limits struct {
	CPUWeight uint64 // cgroup v2 cpu.weight 1..10000; v1 cpu.shares = weight*1024/100
	MemoryMax uint64 // bytes
	PidsMax   int64  // tasks (threads)
}

// LimitsFor returns the cgroup limits of VM cfg: each of its own [limits]
// it sets, else the host config's default; memory = guest RAM +
// vmm_memory_overhead when an overhead is set.
func LimitsFor(cfg *configs.VM, host configs.Limits) Limits {
	l := cfg.Limits.Or(host.VMLimits)
	lim := Limits{CPUWeight: l.CPUWeight, PidsMax: l.Pids}
	if l.VMMMemoryOverhead > 0 {
		lim.MemoryMax = cfg.TotalMemory() + uint64(l.VMMMemoryOverhead)
	}
	return lim
}

// CheckPids refuses a pids limit VM cfg could not run under (its threads
// would not fit), naming the config it comes from.
func CheckPids(cfg *configs.VM, host configs.Limits) error {
	pids := LimitsFor(cfg, host).PidsMax
	if pids == 0 || pids >= cfg.MinPids() {
		return nil
	}
	from := "the host config's [limits] pids"
	if cfg.Limits.Pids > 0 {
		from = "the VM config's [limits] pids"
	}
	return fmt.Errorf("%s = %d is too low for VM %q with %d vCPU(s): pmvm needs at least %d (one thread per vCPU and %d of its own); raise it", from, pids, cfg.Name, cfg.VCPUs, cfg.MinPids(), configs.PidsHeadroom)
}

// String is "cpu_weight 50, memory 320MiB, pids 512", or "no limits".
func (lim Limits) String() string {
	var parts []string
	if lim.CPUWeight > 0 {
		parts = append(parts, fmt.Sprintf("cpu_weight %d", lim.CPUWeight))
	}
	if lim.MemoryMax > 0 {
		parts = append(parts, "memory "+memspec.FormatSize(lim.MemoryMax))
	}
	if lim.PidsMax > 0 {
		parts = append(parts, fmt.Sprintf("pids %d", lim.PidsMax))
	}
	if len(parts) == 0 {
		return "no limits"
	}
	return strings.Join(parts, ", ")
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

// memoryLimit is lim's memory limit as the library takes it.
func (lim Limits) memoryLimit() (int64, error) {
	if lim.MemoryMax > math.MaxInt64 {
		return 0, fmt.Errorf("cgroups: memory limit %d is out of range", lim.MemoryMax)
	}
	return int64(lim.MemoryMax), nil
}

// v2Resources are lim for cgroup2.NewManager: only the controllers a limit
// needs are enabled.
func (lim Limits) v2Resources() (*cgroup2.Resources, error) {
	res := &cgroup2.Resources{}
	if lim.CPUWeight > 0 {
		w := lim.CPUWeight
		res.CPU = &cgroup2.CPU{Weight: &w}
	}
	if lim.MemoryMax > 0 {
		m, err := lim.memoryLimit()
		if err != nil {
			return nil, err
		}
		res.Memory = &cgroup2.Memory{Max: &m}
	}
	if lim.PidsMax > 0 {
		res.Pids = &cgroup2.Pids{Max: lim.PidsMax}
	}
	return res, nil
}

// v1Resources are lim for cgroup1.New (the weight as cpu.shares).
func (lim Limits) v1Resources() (*specs.LinuxResources, error) {
	res := &specs.LinuxResources{}
	if lim.CPUWeight > 0 {
		s := CPUShares(lim.CPUWeight)
		res.CPU = &specs.LinuxCPU{Shares: &s}
	}
	if lim.MemoryMax > 0 {
		m, err := lim.memoryLimit()
		if err != nil {
			return nil, err
		}
		res.Memory = &specs.LinuxMemory{Limit: &m}
	}
	if lim.PidsMax > 0 {
		p := lim.PidsMax
		res.Pids = &specs.LinuxPids{Limit: &p}
	}
	return res, nil
}

// Group is one VM's cgroup: one directory on v2, one per controller on v1.
type Group struct {
	Name string // the VM
	Mode Mode   // the layout it was created in (Unified for a v2 one)
	Path string // the cgroup path inside each hierarchy ("/pmvm/web1")
	// Dirs maps each controller ("" on v2) to the directory of the cgroup.
	Dirs map[string]string

	v2 *cgroup2.Manager
	v1 cgroup1.Cgroup
	// created are the directories that did not exist before New
	// (the cgroup's own and its parents'), outermost first: the library
	// removes the cgroup, not the parents it made for it.
	created []string
}

// v1Controllers are the v1 hierarchies a VM cgroup is created in.
var v1Controllers = []cgroup1.Name{cgroup1.Cpu, cgroup1.Memory, cgroup1.Pids}

// New creates (or reuses, if it exists and holds no process) the
// cgroup of VM name under parent and writes lim into it. parent "" means
// "/pmvm.slice" on v2 and "/pmvm" on v1; a parent without a leading "/" is
// under the cgroup this process runs in. The VM's cgroup is
// parent/<name>.scope on v2 and parent/<name> on v1.
func New(name, parent string, lim Limits) (*Group, error) {
	return newGroup(name, parent, lim, 0)
}

// Join moves this process (every thread) into VM name's cgroup,
// made as New makes it for a restore: a VM gets the same cgroup and
// limits whether pmvm run or pmvm host restore started it. A process that
// is in it already (restore starts pmvm run there) only has lim written;
// a cgroup holding any other process is refused. moved says whether this
// process had to be moved.
func Join(name, parent string, lim Limits) (c *Group, moved bool, err error) {
	self := os.Getpid()
	if c, err = newGroup(name, parent, lim, self); err != nil {
		return nil, false, err
	}
	in, err := c.holds(self)
	if err != nil {
		return nil, false, err
	}
	if in {
		return c, false, nil
	}
	if err := c.AddProc(self); err != nil {
		c.Delete()
		return nil, false, err
	}
	return c, true, nil
}

// newGroup is New, except that process self (0: none) may be in
// the cgroup already. With a relative parent, self in a cgroup ending in
// parent/<name> counts as in the VM's cgroup: the pmvm that started it
// made that cgroup under its own, not under self's.
func newGroup(name, parent string, lim Limits, self int) (*Group, error) {
	switch mode := DetectMode(); mode {
	case Unavailable:
		return nil, errors.New("cgroups: no cgroup filesystem at /sys/fs/cgroup; mount one, or set [limits] cgroups = false in the host config")
	case Unified:
		return newV2(name, v2Mountpoint(mode), parent, lim, self)
	default:
		return newV1(name, mode, parent, lim, self)
	}
}

// relativeParent reports whether cgroup_parent is under pmvm's own cgroup.
func relativeParent(parent string) bool {
	return parent != "" && !strings.HasPrefix(parent, "/")
}

// v2Group is the cgroup v2 group path of VM name under parent.
func v2Group(name, parent string) (string, error) {
	if parent == "" {
		parent = "/pmvm.slice"
	}
	leaf := path.Join(parent, name+".scope")
	if strings.HasPrefix(parent, "/") {
		return leaf, nil
	}
	g, err := cgroup2.NestedGroupPath(leaf)
	if err != nil {
		return "", fmt.Errorf("cgroups: this process's cgroup v2 path, which the relative cgroup_parent %q is under: %w", parent, err)
	}
	return g, nil
}

// newV2 creates VM name's cgroup in the v2 hierarchy at mountpoint.
func newV2(name, mountpoint, parent string, lim Limits, self int) (*Group, error) {
	group, err := v2Group(name, parent)
	if err != nil {
		return nil, err
	}
	if self != 0 && relativeParent(parent) {
		if own, err := cgroup2.PidGroupPath(self); err == nil && strings.HasSuffix(own, "/"+path.Join(parent, name+".scope")) {
			group = own
		}
	}
	if err := cgroup2.VerifyGroupPath(group); err != nil {
		return nil, fmt.Errorf("cgroups: %q: %w", group, err)
	}
	res, err := lim.v2Resources()
	if err != nil {
		return nil, err
	}
	mgr, err := cgroup2.Load(group, cgroup2.WithMountpoint(mountpoint))
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	// NewManager enables the controllers from the root down; say which
	// one is missing rather than "no such file" from subtree_control.
	if need := res.EnabledControllers(); len(need) > 0 {
		avail, err := mgr.RootControllers()
		if err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		for _, ctl := range need {
			if !slices.Contains(avail, ctl) {
				return nil, fmt.Errorf("cgroups: controller %q is not available in %s (cgroup.controllers: %q); a limit needs it", ctl, mountpoint, strings.Join(avail, " "))
			}
		}
	}
	dir := filepath.Join(mountpoint, group)
	c := &Group{Name: name, Mode: Unified, Path: group, Dirs: map[string]string{"": dir}}
	if err := refuseBusy(dir, name, self, func() ([]uint64, error) { return mgr.Procs(false) }); err != nil {
		return nil, err
	}
	c.created = missingDirs(mountpoint, dir)
	c.v2, err = cgroup2.NewManager(mountpoint, group, res)
	if err != nil {
		c.removeCreated()
		if errors.Is(err, unix.EBUSY) {
			err = fmt.Errorf("%w (a cgroup v2 directory with processes in it cannot enable controllers for its children: choose another cgroup_parent)", err)
		}
		return nil, fmt.Errorf("cgroups: create %s: %w", dir, err)
	}
	return c, nil
}

// v1Path is the cgroup v1 path of VM name under parent, per controller.
func v1Path(name, parent string) cgroup1.Path {
	if parent == "" {
		parent = "/pmvm"
	}
	leaf := path.Join(parent, name)
	if strings.HasPrefix(parent, "/") {
		return cgroup1.StaticPath(leaf)
	}
	return cgroup1.NestedPath(leaf)
}

// v1Subsystems are the hierarchies of v1Controllers mounted on this host.
func v1Subsystems() ([]cgroup1.Subsystem, error) {
	all, err := cgroup1.Default()
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	var subs []cgroup1.Subsystem
	for _, s := range all {
		if slices.Contains(v1Controllers, s.Name()) {
			subs = append(subs, s)
		}
	}
	return subs, nil
}

// subsystemDir is the directory of cgroup path p in subsystem s.
func subsystemDir(s cgroup1.Subsystem, p string) (string, bool) {
	ps, ok := s.(interface{ Path(string) string })
	if !ok {
		return "", false
	}
	return ps.Path(p), true
}

// newV1 creates VM name's cgroup in the v1 cpu, memory and pids
// hierarchies.
func newV1(name string, mode Mode, parent string, lim Limits, self int) (*Group, error) {
	res, err := lim.v1Resources()
	if err != nil {
		return nil, err
	}
	subs, err := v1Subsystems()
	if err != nil {
		return nil, err
	}
	needs := map[cgroup1.Name]bool{cgroup1.Cpu: lim.CPUWeight > 0, cgroup1.Memory: lim.MemoryMax > 0, cgroup1.Pids: lim.PidsMax > 0}
	var errs []error
	for _, ctl := range v1Controllers {
		if needs[ctl] && !slices.ContainsFunc(subs, func(s cgroup1.Subsystem) bool { return s.Name() == ctl }) {
			errs = append(errs, fmt.Errorf("cgroups: the v1 %s controller is not mounted; a limit needs it", ctl))
		}
	}
	if len(subs) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("cgroups: none of the v1 cpu, memory, pids controllers is mounted"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	hierarchy := cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) { return subs, nil })

	cgPath := v1Path(name, parent)
	if self != 0 && relativeParent(parent) {
		if own := cgroup1.PidPath(self); v1InLeaf(own, subs, path.Join(parent, name)) {
			cgPath = own
		}
	}
	c := &Group{Name: name, Mode: mode, Dirs: map[string]string{}}
	for _, s := range subs {
		p, err := cgPath(s.Name())
		if err != nil {
			return nil, fmt.Errorf("cgroups: the %s cgroup path of %s: %w", s.Name(), name, err)
		}
		dir, ok := subsystemDir(s, p)
		if !ok {
			continue
		}
		if c.Path == "" {
			c.Path = p
		}
		c.Dirs[string(s.Name())] = dir
		root, _ := subsystemDir(s, "/")
		c.created = append(c.created, missingDirs(root, dir)...)
	}
	// A cgroup of that name holding processes belongs to a VM that runs.
	if old, err := cgroup1.Load(cgPath, hierarchy); err == nil {
		for _, s := range old.Subsystems() {
			procs, err := old.Processes(s.Name(), false)
			dir := c.Dirs[string(s.Name())]
			if err := refuseBusy(dir, name, self, func() ([]uint64, error) { return v1Pids(procs), err }); err != nil {
				return nil, err
			}
		}
	} else if !errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	c.v1, err = cgroup1.New(cgPath, res, hierarchy)
	if err != nil {
		c.removeCreated()
		return nil, fmt.Errorf("cgroups: create %s: %w", c, err)
	}
	return c, nil
}

func v1Pids(procs []cgroup1.Process) []uint64 {
	pids := make([]uint64, 0, len(procs))
	for _, p := range procs {
		pids = append(pids, uint64(p.Pid))
	}
	return pids
}

// v1InLeaf reports whether path own ends in leaf in every hierarchy of subs.
func v1InLeaf(own cgroup1.Path, subs []cgroup1.Subsystem, leaf string) bool {
	for _, s := range subs {
		if p, err := own(s.Name()); err != nil || !strings.HasSuffix(p, "/"+leaf) {
			return false
		}
	}
	return len(subs) > 0
}

// refuseBusy refuses to reuse cgroup directory dir of VM name if procs
// lists a process in it other than self (0: none): it belongs to a VM of
// the same name that still runs.
func refuseBusy(dir, name string, self int, procs func() ([]uint64, error)) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	pids, err := procs()
	if err != nil {
		return fmt.Errorf("cgroups: %s: %w", dir, err)
	}
	pids = slices.DeleteFunc(pids, func(p uint64) bool { return self != 0 && p == uint64(self) })
	if len(pids) > 0 {
		return fmt.Errorf("cgroups: %s already holds processes %v: is VM %q running already? Stop it first, or move those processes out of that cgroup", dir, pids, name)
	}
	return nil
}

// missingDirs lists the directories from below base down to dir that do
// not exist, outermost first.
func missingDirs(base, dir string) []string {
	var missing []string
	for d := dir; d != base && strings.HasPrefix(d, base+"/"); d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	slices.Reverse(missing)
	return missing
}

// removeCreated removes the directories New created that are empty,
// innermost first; parents shared with other VMs stay (EBUSY).
func (c *Group) removeCreated() {
	for i := len(c.created) - 1; i >= 0; i-- {
		os.Remove(c.created[i])
	}
}

// AddProc moves process pid (all its threads) into the cgroup.
func (c *Group) AddProc(pid int) error {
	var err error
	switch {
	case c.v2 != nil:
		err = c.v2.AddProc(uint64(pid))
	case c.v1 != nil:
		err = c.v1.AddProc(uint64(pid))
	default:
		err = errors.New("not created")
	}
	if err != nil {
		return fmt.Errorf("cgroups: add pid %d to %s: %w", pid, c, err)
	}
	return nil
}

// holds reports whether process pid is in the cgroup (on v1, in every
// hierarchy of it).
func (c *Group) holds(pid int) (bool, error) {
	switch {
	case c.v2 != nil:
		g, err := cgroup2.PidGroupPath(pid)
		if err != nil {
			return false, fmt.Errorf("cgroups: %w", err)
		}
		return g == c.Path, nil
	case c.v1 != nil:
		own := cgroup1.PidPath(pid)
		for _, s := range c.v1.Subsystems() {
			p, err := own(s.Name())
			if err != nil {
				return false, nil
			}
			if dir, ok := subsystemDir(s, p); !ok || dir != c.Dirs[string(s.Name())] {
				return false, nil
			}
		}
		return true, nil
	}
	return false, errors.New("cgroups: not created")
}

// Procs lists the processes in the cgroup (of its first hierarchy on v1:
// AddProc puts a process in all of them).
func (c *Group) Procs() ([]int, error) {
	var pids []uint64
	switch {
	case c.v2 != nil:
		var err error
		if pids, err = c.v2.Procs(false); err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
	case c.v1 != nil:
		var first cgroup1.Name
		for _, ctl := range v1Controllers {
			if _, ok := c.Dirs[string(ctl)]; ok {
				first = ctl
				break
			}
		}
		procs, err := c.v1.Processes(first, false)
		if err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		pids = v1Pids(procs)
	default:
		return nil, errors.New("cgroups: not created")
	}
	out := make([]int, len(pids))
	for i, p := range pids {
		out[i] = int(p)
	}
	return out, nil
}

// Delete removes the VM's cgroup (which must hold no process any more) and
// the parent directories New created, if they are empty. Deleting
// it again does nothing.
func (c *Group) Delete() error {
	var err error
	switch {
	case c.v2 != nil:
		if err = c.v2.Delete(); errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	case c.v1 != nil:
		if err = c.v1.Delete(); errors.Is(err, cgroup1.ErrCgroupDeleted) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("cgroups: remove %s: %w", c, err)
	}
	c.removeCreated()
	return nil
}

// Dir is the cgroup's directory on v2, or of the given v1 controller.
func (c *Group) Dir(controller string) string {
	if c.Mode == Unified {
		return c.Dirs[""]
	}
	return c.Dirs[controller]
}

func (c *Group) String() string {
	if c.Mode == Unified {
		return c.Dirs[""]
	}
	var parts []string
	for _, ctl := range v1Controllers {
		if d, ok := c.Dirs[string(ctl)]; ok {
			parts = append(parts, d)
		}
	}
	return strings.Join(parts, ", ")
}

// Start starts cmd in g (nil: where this process is): on cgroup v2
// directly (clone3 with CLONE_INTO_CGROUP, so not one page is charged
// elsewhere), else by moving it right after the start.
func Start(cmd *exec.Cmd, g *Group) error {
	if g == nil {
		return cmd.Start()
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if g.Mode == Unified {
		if dir, err := os.Open(g.Dirs[""]); err == nil {
			cmd.SysProcAttr.UseCgroupFD = true
			cmd.SysProcAttr.CgroupFD = int(dir.Fd())
			err := cmd.Start()
			dir.Close()
			if err == nil {
				return nil
			}
			// Kernels before 5.7 have no CLONE_INTO_CGROUP: move it instead.
			cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = false, 0
			cmd.Process = nil
		}
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	if err := g.AddProc(cmd.Process.Pid); err != nil {
		// A process that leads its own group (pmvm host restore starts
		// pmvm in a session of its own) goes with its group.
		if cmd.SysProcAttr.Setsid || cmd.SysProcAttr.Setpgid {
			unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		} else {
			cmd.Process.Kill()
		}
		cmd.Wait()
		return err
	}
	return nil
}
