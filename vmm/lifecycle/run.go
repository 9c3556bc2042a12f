package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/guestpm"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/cgroup"
	"github.com/pmvm/pmvm/vmm/seccomp"
)

// HostConfig is the host config a run takes its cgroup and state_dir from.
type HostConfig struct {
	Path, From string        // where it was looked for, and why there
	Host       *configs.Host // nil: nothing at Path
}

// RunOptions are how Run runs a VM.
type RunOptions struct {
	Log        zerolog.Logger
	Stdout     io.Writer // the guest console, when the config sends it to stdout
	Stderr     io.Writer // the resume timeline
	ConfigPath string    // the config's file, for messages
	Host       HostConfig
	// Incoming resumes the suspended guest saved in this state file; ""
	// boots the kernel afresh.
	Incoming string
	Started  time.Time // when this process began: a resume's first step
	Version  string    // pmvm's version, written into state files
	// Seccomp confines this process to the system calls a running VM
	// needs (vmm/seccomp) once the VM is built, before the guest runs. It
	// binds the whole process for good: only a process that is pmvm run.
	Seccomp bool
}

// setTimeBudget bounds how long pmvm keeps trying to set the guest clock
// after a wake while the guest agent comes back.
const setTimeBudget = 60 * time.Second

// Run runs VM cfg in this process until the guest powers off or resets, it
// is saved, or the host stops it (the control socket's "stop", SIGINT or
// SIGTERM): checks first (the memory, the files, a saved guest a boot
// would overwrite), then the VM's cgroup, then the machine, booted or
// resumed, with its console, agent line and control socket (suspend,
// save, wakeup, status, stop).
func Run(cfg *configs.VM, opts RunOptions) (vmm.Outcome, error) {
	log := opts.Log
	if err := refuseDuringUpdate(opts.Host); err != nil {
		return vmm.OutcomeError, err
	}
	if opts.Incoming == "" {
		if err := refuseBootOverSaved(cfg, opts.Host, opts.ConfigPath); err != nil {
			return vmm.OutcomeError, err
		}
	}
	// Memory that cannot honour the VM's mode, a kernel that is not one,
	// a host without KVM: refused before anything is created (cgroup,
	// console file, sockets). Its memory verdicts go on to CheckIncoming
	// and vmm.New; pmem.Open then classifies each backing through the
	// descriptor it maps.
	mem, err := vmm.Preflight(cfg, opts.Incoming != "")
	if err != nil {
		return vmm.OutcomeError, preflightRefusal(cfg, err)
	}
	if opts.Incoming == "" {
		if err := refuseBootOverSavedMemory(cfg, opts.Host, opts.ConfigPath, mem); err != nil {
			return vmm.OutcomeError, err
		}
	}
	// Before guest memory is mapped and vCPU threads start, so that every
	// page and thread of this VM is in its cgroup.
	if err := JoinCgroup(cfg, opts.Host, log); err != nil {
		return vmm.OutcomeError, err
	}
	var resume *Resume
	if opts.Incoming != "" {
		if resume, err = BeginResume(cfg, opts.Incoming, opts.Started, mem); err != nil {
			return vmm.OutcomeError, err
		}
	}
	// The control socket goes last: callers take its disappearance to mean
	// that this pmvm has let go of the agent socket and the guest memory
	// (defers run in reverse, so this one is registered first).
	var ctl *vmm.ControlServer
	defer func() {
		if ctl != nil {
			ctl.Close()
		}
	}()
	console, closeConsole, err := openConsole(cfg.Console, opts.Stdout, log)
	if err != nil {
		return vmm.OutcomeError, err
	}
	defer closeConsole()

	agent, err := vmm.ListenSerial(cfg.Agent.Socket)
	if err != nil {
		return vmm.OutcomeError, fmt.Errorf("agent socket: %w", err)
	}
	defer agent.Close()

	v, err := Open(cfg, Options{Log: log, Console: console, Agent: agent, Resume: resume, Memory: mem})
	if err != nil {
		return vmm.OutcomeError, err
	}
	defer v.Close()
	m := v.M
	line := agentLine{agent}
	m.OnWake(func(why string) {
		ctx, cancel := context.WithTimeout(context.Background(), setTimeBudget)
		defer cancel()
		if err := guestpm.SetTimeAfterWake(ctx, line, log); err != nil {
			log.Warn().Err(err).Msg("guest clock may be off after wake")
		}
	})
	suspend := func(ctx context.Context) error { return Suspend(ctx, m, line, log) }
	ctl, err = vmm.ServeControl(cfg.Control.Socket, m, log, commands(m, suspend, opts.Version, log))
	if err != nil {
		return vmm.OutcomeError, fmt.Errorf("control socket: %w", err)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	log.Info().Int("vcpus", cfg.VCPUs).Str("memory", memspec.FormatSize(cfg.TotalMemory())).Bool("resume", resume != nil).Msg("starting guest")
	if opts.Seccomp {
		took, err := seccomp.Install()
		if err != nil {
			return vmm.OutcomeError, err
		}
		log.Info().Dur("took", took).Int("allowed_calls", len(seccomp.Allowed)).Msg("confined to the system calls a running VM needs (seccomp)")
	}
	// A resume's state file is spent (moved aside) before the wake, under
	// seccomp: the same calls as the move after the wake it replaces.
	if err := v.Start(ctx); err != nil {
		return vmm.OutcomeError, err
	}
	if resume != nil {
		log.Info().Str("state", resume.SpentTo).Msg("state file moved aside before the wake: it cannot be resumed again")
		fmt.Fprint(opts.Stderr, resume.Timeline.String())
		resume.Timeline.LogSummary(log)
	}
	return v.Wait()
}

// served is what the control socket's lifecycle commands need of a
// machine; *vmm.Machine is one.
type served interface {
	Machine
	Status() vmm.Status
	Finish() // ends a saved machine (Run returns OutcomeSaved)
}

// commands are the control socket's lifecycle commands for m, beside
// vmm's own (status, wakeup, stop): suspend, and save, which ends m once
// its answer is sent.
func commands(m served, suspend func(context.Context) error, version string, log zerolog.Logger) map[string]vmm.CommandFunc {
	return map[string]vmm.CommandFunc{
		"suspend": func(ctx context.Context, _ vmm.ControlRequest) vmm.ControlResponse {
			if err := suspend(ctx); err != nil {
				return vmm.ControlResponse{Error: err.Error()}
			}
			st := m.Status()
			return vmm.ControlResponse{OK: true, Status: &st}
		},
		"save": func(ctx context.Context, req vmm.ControlRequest) vmm.ControlResponse {
			tl, err := Save(ctx, m, suspend, req.State, version, log)
			if err != nil {
				return vmm.ControlResponse{Error: err.Error(), Timeline: tl}
			}
			st := m.Status()
			return vmm.ControlResponse{OK: true, Status: &st, Timeline: tl, After: m.Finish}
		},
	}
}

// ErrBackingMissing is wrapped by Run's refusal of a VM whose memory
// backing does not exist (on a resume, even with create = true: there is
// no guest memory to create). Like a backing that cannot honour the mode
// (pmem.ErrModeRefused), it is the config that cannot run on this host.
var ErrBackingMissing = errors.New("a memory backing does not exist")

// missingBacking is an error that wraps ErrBackingMissing too.
type missingBacking struct{ error }

func (missingBacking) Is(target error) bool { return target == ErrBackingMissing }

// preflightRefusal is Preflight's refusal err, which comes before anything
// is created or mapped, saying so; a missing memory backing is marked
// ErrBackingMissing (the probe is cheap and repeated only here: a missing
// kernel is not one).
func preflightRefusal(cfg *configs.VM, err error) error {
	err = fmt.Errorf("%w; nothing was started and guest memory was not touched", err)
	if _, verr := pmem.Verdicts(vmm.MemorySpecs(cfg)...); verr != nil && errors.Is(verr, fs.ErrNotExist) {
		return missingBacking{err}
	}
	return err
}

// refuseBootOverSaved refuses to boot a VM afresh while the host's
// state_dir holds its saved guest: the new boot would overwrite the memory
// that guest is suspended in. pmvm host update saves there, and a restore
// that failed leaves the file in place for the operator.
func refuseBootOverSaved(cfg *configs.VM, h HostConfig, cfgPath string) error {
	if h.Host == nil {
		return nil
	}
	p := h.Host.StatePath(cfg.Name)
	if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	what := "a state file"
	if f, err := state.ReadFile(p); err == nil {
		what = fmt.Sprintf("the guest saved %s by pmvm %s", f.Header.Created.UTC().Format(time.RFC3339), f.Header.PMVMVersion)
	} else {
		what = fmt.Sprintf("a state file that does not read (%v)", err)
	}
	return fmt.Errorf("VM %q has %s in %s (state_dir of host config %s): booting it afresh would overwrite the memory that guest is suspended in; nothing was started and guest memory was not touched. "+
		"Resume it: pmvm run %s --incoming %s; or, to discard that guest for good, move the file out of %s first", cfg.Name, what, p, h.Path, cfgPath, p, h.Host.StateDir)
}

// refuseBootOverSavedMemory refuses to boot a VM afresh on memory that a
// guest saved in the host's state_dir is suspended in, whichever VM that
// guest is: a config may name another VM's backing (the same device-dax
// namespace, the same file). Each *.state file's memory sections record
// the identity of its backings; mem is Preflight's verdicts on cfg's.
// State files that do not read are left to refuseBootOverSaved and pmvm
// host restore.
func refuseBootOverSavedMemory(cfg *configs.VM, h HostConfig, cfgPath string, mem *pmem.Report) error {
	if h.Host == nil || mem == nil {
		return nil
	}
	files, err := filepath.Glob(filepath.Join(h.Host.StateDir, "*.state"))
	if err != nil {
		return nil
	}
	for _, p := range files {
		if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
			continue // never opened: a FIFO would block the boot
		}
		f, err := state.ReadFile(p)
		if err != nil {
			continue
		}
		for _, sec := range f.Sections {
			if !strings.HasPrefix(sec.Name, "memory/") {
				continue
			}
			var saved pmem.Identity
			if sec.DecodeJSON(&saved) != nil {
				continue
			}
			for _, b := range mem.Blocks {
				if b.Identity == nil || !sameBacking(saved, *b.Identity) {
					continue
				}
				return fmt.Errorf("VM %q: memory block %q (%s) is the memory that VM %q is suspended in, saved %s in %s (state_dir of host config %s): "+
					"booting on it would overwrite that guest; nothing was started and guest memory was not touched. "+
					"Resume that guest first (pmvm host restore, or pmvm run ITS-CONFIG --incoming %s), give %s other memory, "+
					"or, to discard that guest for good, move %s out of %s",
					cfg.Name, b.Block, b.Backing, f.Header.VMName, f.Header.Created.UTC().Format(time.RFC3339), p, h.Path, p, cfgPath, p, h.Host.StateDir)
			}
		}
	}
	return nil
}

// sameBacking reports whether two backing identities name the same memory,
// whatever the size each maps of it: a device-dax namespace by its uuid
// (or, without one, its device number, whatever node names it); a file by
// its inode on its filesystem (on fsdax, whose block device may be
// numbered differently after a kexec, by its inode at the same path).
// Anonymous and memfd memory is never shared between VMs.
func sameBacking(a, b pmem.Identity) bool {
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case pmem.KindAnonymous, pmem.KindMemfd:
		return false
	case pmem.KindDevDax:
		if a.DaxUUID != "" && b.DaxUUID != "" {
			return a.DaxUUID == b.DaxUUID
		}
		return a.Rdev == b.Rdev
	case pmem.KindFsDax:
		return a.Ino == b.Ino && (a.Dev == b.Dev || a.Path == b.Path)
	}
	return a.Ino == b.Ino && a.Dev == b.Dev
}

// JoinCgroup moves this pmvm into the VM's cgroup with its limits, made as
// pmvm host restore makes it, so that the VM runs in the same cgroup with
// the same limits before and after a host update. Without a host config,
// or with cgroups = false in it, it stays where it is.
func JoinCgroup(cfg *configs.VM, h HostConfig, log zerolog.Logger) error {
	switch {
	case h.Host == nil:
		log.Info().Str("host_config", h.Path).Msgf("no host config (%s): no cgroup of the VM's own, pmvm stays in the one it was started in", h.From)
		return nil
	case !h.Host.Limits.CgroupsEnabled():
		log.Info().Str("host_config", h.Path).Msg("cgroups = false in the host config: no cgroup of the VM's own")
		return nil
	}
	if err := cgroup.CheckPids(cfg, h.Host.Limits); err != nil {
		return fmt.Errorf("cgroups: %w (host config %s)", err, h.Path)
	}
	lim := cgroup.LimitsFor(cfg, h.Host.Limits)
	cg, moved, err := cgroup.Join(cfg.Name, h.Host.Limits.CgroupParent, lim)
	if err != nil {
		return fmt.Errorf("%w; nothing was started and guest memory was not touched (cgroup from host config %s)", err, h.Path)
	}
	log.Info().Str("cgroup", cg.String()).Str("limits", lim.String()).Bool("moved", moved).Str("host_config", h.Path).Msg("running in the VM's cgroup")
	return nil
}

// agentLine lends the COM2 socket bridge to guestpm.
type agentLine struct{ p *vmm.SerialPort }

func (l agentLine) Borrow(ctx context.Context) (io.ReadWriteCloser, func(), error) {
	return l.p.Borrow(ctx)
}

func openConsole(c configs.Console, stdout io.Writer, log zerolog.Logger) (io.Writer, func(), error) {
	switch c.Output {
	case configs.ConsoleFile:
		f, err := vmm.OpenConsoleLog(c.Path, int64(c.MaxSizeOrDefault()), log)
		if err != nil {
			return nil, nil, err
		}
		return f, func() { f.Close() }, nil
	case configs.ConsoleNone:
		return io.Discard, func() {}, nil
	default:
		return stdout, func() {}, nil
	}
}
