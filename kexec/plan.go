package kexec

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/cgroup"
)

// PlanOptions are what the operator asked for.
type PlanOptions struct {
	HostConfig string // the host config's path, for the record
	Kernel     string // the bzImage to kexec
	Initrd     string // "" for none
	Cmdline    string
	// KexecStatus reports the host's kexec support; nil means HostStatus.
	// Tests on a host without kexec replace it.
	KexecStatus func() Status
}

// Plan is everything a host update will do, decided before anything is
// touched. It is printed by --dry-run. Refused is non-empty when the
// update must not start.
type Plan struct {
	HostConfig string
	Host       *configs.Host
	Kernel     string
	KernelInfo *BzImage
	Initrd     string
	Cmdline    string
	Kexec      Status
	StateFS    string // the filesystem state_dir is on
	CgroupMode cgroup.Mode

	// VMs are carried over (or refused, with Reason): every VM of vm_dir
	// whose control socket answers.
	VMs []PlanVM
	// Idle are vm_dir configs whose VM is not running: left alone.
	Idle []PlanVM
	// Problems are host-level refusals (kernel, kexec, state_dir, hooks,
	// pmvm processes outside vm_dir).
	Problems []string
	// Notes are facts worth showing that refuse nothing.
	Notes []string
}

// PlanVM is one VM of the plan.
type PlanVM struct {
	Name      string
	Config    string
	Control   string
	RunState  string // as the VM reported it; "" when not running
	Mode      string
	VCPUs     int
	Memory    uint64
	Blocks    []pmem.BlockReport
	StatePath string
	Limits    cgroup.Limits
	OK        bool
	Reason    string // why it cannot be carried over
	Notes     []string

	cfg *configs.VM
}

// Carried returns the VMs the update will save.
func (p *Plan) Carried() []PlanVM {
	var out []PlanVM
	for _, v := range p.VMs {
		if v.OK {
			out = append(out, v)
		}
	}
	return out
}

// Err is nil when the update may go ahead, else every reason it may not,
// each naming the VM or the host part at fault.
func (p *Plan) Err() error {
	var errs []error
	for _, pr := range p.Problems {
		errs = append(errs, errors.New(pr))
	}
	for _, v := range p.VMs {
		if !v.OK {
			errs = append(errs, fmt.Errorf("VM %q (%s) cannot be preserved: %s", v.Name, v.Config, v.Reason))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return &RefusedError{Err: errors.Join(errs...)}
}

// RefusedError is a plan that refuses the update; nothing was touched.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string {
	return "host update refused before anything was suspended:\n" + indent(e.Err.Error())
}
func (e *RefusedError) Unwrap() error { return e.Err }

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// statusTimeout is how long a VM's control socket may take to answer status.
const statusTimeout = 3 * time.Second

// NewPlan looks at the host and every VM of host.VMDir without changing
// anything: no VM is suspended, no kernel loaded, no file written.
func NewPlan(host *configs.Host, opts PlanOptions) *Plan {
	p := &Plan{HostConfig: opts.HostConfig, Host: host, Kernel: opts.Kernel, Initrd: opts.Initrd, Cmdline: opts.Cmdline}
	p.checkHost(opts)

	files, err := filepath.Glob(filepath.Join(host.VMDir, "*.toml"))
	if err != nil || len(files) == 0 {
		if _, serr := os.Stat(host.VMDir); serr != nil {
			p.Problems = append(p.Problems, fmt.Sprintf("vm_dir %s: %v", host.VMDir, serr))
		} else {
			p.Notes = append(p.Notes, fmt.Sprintf("vm_dir %s has no *.toml VM config", host.VMDir))
		}
	}
	sort.Strings(files)
	names := map[string]string{}
	for _, file := range files {
		v := planVM(host, file)
		if v.RunState == "" && v.OK {
			if _, err := os.Stat(v.StatePath); err == nil {
				p.Notes = append(p.Notes, fmt.Sprintf("VM %q is not running and its state file %s waits (an earlier restore failed?): pmvm host restore will try it again after the kexec", v.Name, v.StatePath))
			}
			p.Idle = append(p.Idle, v)
			continue
		}
		if other, dup := names[v.Name]; dup && v.Name != "" {
			v.OK = false
			v.Reason = fmt.Sprintf("its name is also used by %s: both would save to %s", other, v.StatePath)
		}
		names[v.Name] = file
		p.VMs = append(p.VMs, v)
	}
	p.checkProcesses(files)
	return p
}

// planVM judges one VM config.
func planVM(host *configs.Host, file string) PlanVM {
	v := PlanVM{Name: strings.TrimSuffix(filepath.Base(file), ".toml"), Config: file}
	cfg, err := configs.Load(file)
	if err != nil {
		// Its VM may be running: we cannot tell which socket to ask, so
		// the kexec could kill it unsaved.
		v.Reason = "its config does not load (fix it or move it out of vm_dir): " + firstLine(err.Error())
		v.RunState = "unknown"
		return v
	}
	v.cfg = cfg
	v.Name, v.Control, v.Mode, v.VCPUs, v.Memory = cfg.Name, cfg.Control.Socket, string(cfg.RunMode()), cfg.VCPUs, cfg.TotalMemory()
	v.StatePath = host.StatePath(cfg.Name)
	v.Limits = cgroup.LimitsFor(cfg, host.Limits)

	resp, err := vmm.CallControl(cfg.Control.Socket, vmm.ControlRequest{Command: "status", Timeout: statusTimeout.Milliseconds()})
	if err != nil {
		if notListening(err) {
			v.OK = true // not running: nothing to carry
			return v
		}
		v.RunState = "unknown"
		v.Reason = fmt.Sprintf("its control socket %s does not answer: %v", cfg.Control.Socket, err)
		return v
	}
	if !resp.OK || resp.Status == nil {
		v.RunState = "unknown"
		v.Reason = fmt.Sprintf("status on %s failed: %s", cfg.Control.Socket, resp.Error)
		return v
	}
	v.RunState = string(resp.Status.RunState)
	var reasons []string
	if resp.Status.Name != cfg.Name {
		reasons = append(reasons, fmt.Sprintf("the pmvm answering on %s runs VM %q, not %q", cfg.Control.Socket, resp.Status.Name, cfg.Name))
	}
	switch resp.Status.RunState {
	case vmm.StateRunning, vmm.StateSuspended:
	default:
		reasons = append(reasons, fmt.Sprintf("it is %s; an update carries running or suspended VMs: wait and retry", resp.Status.RunState))
	}
	if cfg.RunMode() != configs.ModeReboot {
		reasons = append(reasons, fmt.Sprintf("its mode is %q: only mode \"reboot\" VMs survive a host kexec, this one's RAM would be lost (stop it first, or run it in mode \"reboot\" on memory that survives a kexec)", cfg.RunMode()))
	}
	rep, _ := pmem.Check(vmm.MemorySpecs(cfg)...)
	v.Blocks = rep.Blocks
	if cfg.RunMode() == configs.ModeReboot && !rep.OK {
		for _, b := range rep.Blocks {
			if !b.OK {
				reasons = append(reasons, fmt.Sprintf("memory block %q (%s): %s", b.Block, b.Backing, b.Reason))
			}
		}
	}
	if host.Limits.CgroupsEnabled() {
		if err := cgroup.CheckPids(cfg, host.Limits); err != nil {
			reasons = append(reasons, err.Error()+": it could not be restored")
		}
		if cfg.Limits != (configs.VMLimits{}) {
			v.Notes = append(v.Notes, "cgroup limits with its own [limits]: "+v.Limits.String())
		}
	}
	if _, err := os.Stat(v.StatePath); err == nil {
		v.Notes = append(v.Notes, fmt.Sprintf("an older %s will be replaced", v.StatePath))
	}
	v.OK = len(reasons) == 0
	v.Reason = strings.Join(reasons, "; ")
	return v
}

// notListening reports whether a control call failed because nobody listens
// (no socket file, or a stale one): the VM is not running.
func notListening(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

// checkHost checks the kernel, kexec, state_dir, cgroups and hooks.
func (p *Plan) checkHost(opts PlanOptions) {
	bad := func(format string, a ...any) { p.Problems = append(p.Problems, fmt.Sprintf(format, a...)) }
	if p.Kernel == "" {
		bad("no kernel: give --kernel /boot/vmlinuz-VERSION")
	} else if bz, err := CheckKernel(p.Kernel); err != nil {
		bad("%v", err)
	} else {
		p.KernelInfo = bz
	}
	if p.Initrd != "" {
		if f, err := os.Open(p.Initrd); err != nil {
			bad("initrd: %v", err)
		} else {
			f.Close()
		}
	}
	if len(p.Cmdline) > MaxCmdline {
		bad("the command line is %d bytes; the kernel takes at most %d", len(p.Cmdline), MaxCmdline)
	}
	status := HostStatus
	if opts.KexecStatus != nil {
		status = opts.KexecStatus
	}
	p.Kexec = status()
	if p.Kexec.Problem != "" {
		bad("this host cannot kexec: %s", p.Kexec.Problem)
	}

	// state_dir must survive the kexec: look at the filesystem of the
	// directory (or of its nearest existing parent, if it is still to be
	// created).
	dir := p.Host.StateDir
	for {
		if _, err := os.Stat(dir); err == nil || dir == "/" {
			break
		}
		dir = filepath.Dir(dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		bad("state_dir %s: %v", p.Host.StateDir, err)
	} else {
		p.StateFS = fsName(st.Type)
		switch st.Type {
		case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC:
			bad("state_dir %s is on %s, which a kexec empties: the state files would be lost; put state_dir on a disk filesystem", p.Host.StateDir, p.StateFS)
		}
	}

	if p.Host.Limits.CgroupsEnabled() {
		p.CgroupMode = cgroup.DetectMode()
		if p.CgroupMode == cgroup.Unavailable {
			bad("cgroups: no cgroup filesystem at /sys/fs/cgroup, so restored VMs could not get their cgroups; mount one or set [limits] cgroups = false")
		}
	}
	for _, phase := range configs.Phases {
		h := p.Host.Hooks.Get(phase)
		if h == nil || len(h.Command) == 0 {
			continue
		}
		fi, err := os.Stat(h.Command[0])
		switch {
		case err != nil:
			bad("hooks.%s: %v", phase, err)
		case fi.IsDir() || fi.Mode()&0o111 == 0:
			bad("hooks.%s: %s is not an executable file", phase, h.Command[0])
		}
	}
}

func fsName(t int64) string {
	switch t {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.RAMFS_MAGIC:
		return "ramfs"
	case unix.EXT4_SUPER_MAGIC: // ext2 and ext3 share it
		return "ext2/3/4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("filesystem %#x", t)
}

// checkProcesses refuses the update when a pmvm process runs a VM whose
// config is not in vm_dir, or one of vm_dir whose control socket does not
// answer (starting up?): the kexec would kill either unsaved.
func (p *Plan) checkProcesses(files []string) {
	known := map[string]bool{}
	for _, f := range files {
		known[canonical(f)] = true
	}
	idle := map[string]int{}
	for i, v := range p.Idle {
		idle[canonical(v.Config)] = i
	}
	moved := map[int]bool{}
	for _, s := range findPMVMRuns() {
		if i, ok := idle[s.config]; ok && !moved[i] {
			v := p.Idle[i]
			v.OK, v.RunState = false, "unknown"
			v.Reason = fmt.Sprintf("pmvm process %d runs it but its control socket %s does not answer (still starting?): retry in a moment", s.pid, v.Control)
			p.VMs = append(p.VMs, v)
			moved[i] = true
			continue
		}
		if !known[s.config] {
			p.Problems = append(p.Problems, fmt.Sprintf("pmvm process %d runs %s, which is not in vm_dir %s: the kexec would kill that VM unsaved (move its config into vm_dir, or stop it)", s.pid, s.config, p.Host.VMDir))
		}
	}
	if len(moved) > 0 {
		var rest []PlanVM
		for i, v := range p.Idle {
			if !moved[i] {
				rest = append(rest, v)
			}
		}
		p.Idle = rest
	}
}

type pmvmRun struct {
	pid    int
	config string
}

// findPMVMRuns lists processes whose command line is "pmvm run CONFIG ...".
func findPMVMRuns() []pmvmRun {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []pmvmRun
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cfg := pmvmRunConfig(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"))
		if cfg == "" {
			continue
		}
		if !filepath.IsAbs(cfg) {
			cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
			if err != nil {
				continue
			}
			cfg = filepath.Join(cwd, cfg)
		}
		out = append(out, pmvmRun{pid: pid, config: canonical(cfg)})
	}
	return out
}

// pmvmRunConfig returns CONFIG of argv "pmvm run [flags] CONFIG [flags]",
// or "" for any other command line.
func pmvmRunConfig(argv []string) string {
	if len(argv) < 3 || filepath.Base(argv[0]) != "pmvm" || argv[1] != "run" {
		return ""
	}
	args := argv[2:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 < len(args) {
				return args[i+1]
			}
			return ""
		}
		if strings.HasPrefix(a, "-") {
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && (name == "log-level" || name == "incoming" || name == "host-config") {
				i++ // the flag's value
			}
			continue
		}
		return a
	}
	return ""
}

func canonical(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// Print writes the plan for the operator.
func (p *Plan) Print(w io.Writer) {
	fmt.Fprintf(w, "host config:  %s\n", orDash(p.HostConfig))
	kernel := p.Kernel
	if p.KernelInfo != nil {
		kernel += fmt.Sprintf(" (boot protocol %d.%02d", p.KernelInfo.Protocol>>8, p.KernelInfo.Protocol&0xff)
		if p.KernelInfo.Version != "" {
			kernel += ", " + p.KernelInfo.Version
		}
		kernel += ")"
	}
	fmt.Fprintf(w, "kernel:       %s\n", orDash(kernel))
	fmt.Fprintf(w, "initrd:       %s\n", orNone(p.Initrd))
	fmt.Fprintf(w, "cmdline:      %q\n", p.Cmdline)
	kx := "not supported"
	if p.Kexec.Supported {
		kx = "supported"
		if p.Kexec.Loaded {
			kx += ", a kernel is loaded already (it will be replaced)"
		}
	}
	if p.Kexec.Lockdown != "" {
		kx += ", lockdown " + p.Kexec.Lockdown
	}
	fmt.Fprintf(w, "kexec:        %s\n", kx)
	fmt.Fprintf(w, "state dir:    %s (%s)\n", p.Host.StateDir, orDash(p.StateFS))
	fmt.Fprintf(w, "timeline:     %s\n", p.Host.TimelinePath())
	if p.Host.Limits.CgroupsEnabled() {
		l := p.Host.Limits
		lim := []string{}
		if l.CPUWeight > 0 {
			lim = append(lim, fmt.Sprintf("cpu_weight %d", l.CPUWeight))
		}
		if l.VMMMemoryOverhead > 0 {
			lim = append(lim, fmt.Sprintf("memory = guest RAM + %s", l.VMMMemoryOverhead))
		}
		if l.Pids > 0 {
			lim = append(lim, fmt.Sprintf("pids %d", l.Pids))
		}
		if len(lim) == 0 {
			lim = append(lim, "none")
		}
		parent := l.CgroupParent
		if parent == "" {
			parent = "default"
		}
		fmt.Fprintf(w, "cgroups:      %s, parent %s, defaults %s (a VM config's [limits] overrides them)\n", p.CgroupMode, parent, strings.Join(lim, ", "))
	} else {
		fmt.Fprintf(w, "cgroups:      off\n")
	}
	for i, phase := range configs.Phases {
		label := "              "
		if i == 0 {
			label = "hooks:        "
		}
		desc := "-"
		if h := p.Host.Hooks.Get(phase); h != nil {
			desc = fmt.Sprintf("%s (timeout %s)", strings.Join(h.Command, " "), h.Timeout)
		}
		fmt.Fprintf(w, "%s%-13s %s\n", label, phase+":", desc)
	}
	fmt.Fprintln(w)

	if len(p.VMs) == 0 {
		fmt.Fprintln(w, "no running VM to carry over")
	} else {
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "VM\tCONFIG\tRUNSTATE\tMEMORY\tVERDICT\tSTATE FILE")
		for _, v := range p.VMs {
			verdict := "ok: " + memorySummary(v.Blocks)
			if !v.OK {
				verdict = "REFUSED: " + v.Reason
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Config, v.RunState, configs.FormatSize(v.Memory), verdict, orDash(v.StatePath))
		}
		tw.Flush()
	}
	for _, v := range p.VMs {
		for _, n := range v.Notes {
			fmt.Fprintf(w, "  %s: %s\n", v.Name, n)
		}
	}
	if len(p.Idle) > 0 {
		var idle []string
		for _, v := range p.Idle {
			idle = append(idle, fmt.Sprintf("%s (%s)", v.Name, v.Config))
		}
		fmt.Fprintf(w, "not running, left alone: %s\n", strings.Join(idle, ", "))
	}
	for _, n := range p.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintln(w)
	if err := p.Err(); err != nil {
		fmt.Fprintln(w, err)
		return
	}
	fmt.Fprintf(w, "the update would save %d VM(s), load %s and kexec into it\n", len(p.Carried()), p.Kernel)
}

// memorySummary is "ram0 devdax survives-kexec" for each block.
func memorySummary(blocks []pmem.BlockReport) string {
	var parts []string
	for _, b := range blocks {
		parts = append(parts, fmt.Sprintf("%s %s %s", b.Block, b.Kind, b.Class))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
