package kexec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/pmem/memspec"
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
	// SkipUnsaveable lets the update go ahead without the VMs it cannot
	// carry over (the plan's refused VMs, and those whose save then
	// fails): the kexec kills them unsaved. The default is all or nothing.
	SkipUnsaveable bool
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
	// SkipUnsaveable: VMs that cannot be carried over are left to the
	// kexec instead of refusing the update (PlanOptions.SkipUnsaveable).
	SkipUnsaveable bool
}

// PlanVM is one VM of the plan.
type PlanVM struct {
	Name      string
	Config    string
	Control   string
	RunState  string // as the VM reported it; "" when not running
	Mode      memspec.Mode
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

// Skipped returns the VMs the update cannot carry over; with
// SkipUnsaveable the kexec kills them unsaved, else they refuse it.
func (p *Plan) Skipped() []PlanVM {
	var out []PlanVM
	for _, v := range p.VMs {
		if !v.OK {
			out = append(out, v)
		}
	}
	return out
}

// Err is nil when the update may go ahead, else every reason it may not,
// each naming the VM or the host part at fault. With SkipUnsaveable a VM
// that cannot be carried over refuses nothing.
func (p *Plan) Err() error {
	var errs []error
	for _, pr := range p.Problems {
		errs = append(errs, errors.New(pr))
	}
	for _, v := range p.VMs {
		if !v.OK && !p.SkipUnsaveable {
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
	p := &Plan{HostConfig: opts.HostConfig, Host: host, Kernel: opts.Kernel, Initrd: opts.Initrd, Cmdline: opts.Cmdline, SkipUnsaveable: opts.SkipUnsaveable}
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
	v.Name, v.Control, v.Mode, v.VCPUs, v.Memory = cfg.Name, cfg.Control.Socket, cfg.RunMode(), cfg.VCPUs, cfg.TotalMemory()
	v.StatePath = host.StatePath(cfg.Name)
	v.Limits = cgroup.LimitsFor(cfg, host.Limits)

	st, running, err := askStatus(cfg)
	if !running {
		v.OK = err == nil // not running: nothing to carry
		if err != nil {
			v.RunState, v.Reason = "unknown", err.Error()
		}
		return v
	}
	v.RunState = string(st.RunState)
	reasons := statusReasons(cfg, st)
	reasons = append(reasons, v.memoryReasons(cfg)...)
	reasons = append(reasons, v.cgroupReasons(cfg, host.Limits)...)
	if _, err := os.Stat(v.StatePath); err == nil {
		v.Notes = append(v.Notes, fmt.Sprintf("an older %s will be replaced", v.StatePath))
	}
	v.OK = len(reasons) == 0
	v.Reason = strings.Join(reasons, "; ")
	return v
}

// askStatus asks the VM's pmvm for its status. Not running (nobody listens
// on the control socket): running is false and err nil. A socket that does
// not answer, or a failed status: running is false and err says so.
func askStatus(cfg *configs.VM) (st *vmm.Status, running bool, err error) {
	resp, err := vmm.CallControl(cfg.Control.Socket, vmm.ControlRequest{Command: "status", Timeout: statusTimeout.Milliseconds()})
	switch {
	case err != nil && notListening(err):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("its control socket %s does not answer: %v", cfg.Control.Socket, err)
	case !resp.OK || resp.Status == nil:
		return nil, false, fmt.Errorf("status on %s failed: %s", cfg.Control.Socket, resp.Error)
	}
	return resp.Status, true, nil
}

// statusReasons are why a running VM, by what its pmvm answers and by its
// mode, cannot be carried over.
func statusReasons(cfg *configs.VM, st *vmm.Status) []string {
	var reasons []string
	if st.Name != cfg.Name {
		reasons = append(reasons, fmt.Sprintf("the pmvm answering on %s runs VM %q, not %q", cfg.Control.Socket, st.Name, cfg.Name))
	}
	switch st.RunState {
	case vmm.StateRunning, vmm.StateSuspended:
	default:
		reasons = append(reasons, fmt.Sprintf("it is %s; an update carries running or suspended VMs: wait and retry", st.RunState))
	}
	if cfg.RunMode() != memspec.ModeReboot {
		reasons = append(reasons, fmt.Sprintf("its mode is %q: only mode \"reboot\" VMs survive a host kexec, this one's RAM would be lost (stop it first, or run it in mode \"reboot\" on memory that survives a kexec)", cfg.RunMode()))
	}
	return reasons
}

// memoryReasons records the verdict on every memory block in v.Blocks and
// returns why the blocks refused cannot survive the kexec (mode reboot
// only: another mode is refused as a whole by statusReasons).
func (v *PlanVM) memoryReasons(cfg *configs.VM) []string {
	rep, _ := pmem.Check(vmm.MemorySpecs(cfg)...)
	v.Blocks = rep.Blocks
	if cfg.RunMode() != memspec.ModeReboot || rep.OK {
		return nil
	}
	var reasons []string
	for _, b := range rep.Blocks {
		if !b.OK {
			reasons = append(reasons, fmt.Sprintf("memory block %q (%s): %s", b.Block, b.Backing, b.Reason))
		}
	}
	return reasons
}

// cgroupReasons returns why the VM could not be restored into its cgroup,
// and notes its own limits in v.Notes.
func (v *PlanVM) cgroupReasons(cfg *configs.VM, limits configs.Limits) []string {
	if !limits.CgroupsEnabled() {
		return nil
	}
	var reasons []string
	if err := cgroup.CheckPids(cfg, limits); err != nil {
		reasons = append(reasons, err.Error()+": it could not be restored")
	}
	if cfg.Limits != (configs.VMLimits{}) {
		v.Notes = append(v.Notes, "cgroup limits with its own [limits]: "+v.Limits.String())
	}
	return reasons
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
			p.VMs = append(p.VMs, notAnswering(p.Idle[i], s.pid))
			moved[i] = true
			continue
		}
		if !known[s.config] {
			p.Problems = append(p.Problems, fmt.Sprintf("pmvm process %d runs %s, which is not in vm_dir %s: the kexec would kill that VM unsaved (move its config into vm_dir, or stop it)", s.pid, s.config, p.Host.VMDir))
		}
	}
	p.Idle = withoutIndexes(p.Idle, moved)
}

// notAnswering is v, thought idle, refused because pmvm process pid runs it
// without answering on its control socket.
func notAnswering(v PlanVM, pid int) PlanVM {
	v.OK, v.RunState = false, "unknown"
	v.Reason = fmt.Sprintf("pmvm process %d runs it but its control socket %s does not answer (still starting?): retry in a moment", pid, v.Control)
	return v
}

// withoutIndexes returns vms without the entries whose index is in drop.
func withoutIndexes(vms []PlanVM, drop map[int]bool) []PlanVM {
	if len(drop) == 0 {
		return vms
	}
	var rest []PlanVM
	for i, v := range vms {
		if !drop[i] {
			rest = append(rest, v)
		}
	}
	return rest
}
