// Command pmvm is the operator's CLI: it runs a VM from its TOML config in
// the foreground. Exit codes are documented in exitcodes.go and the README.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/guestpm"

	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/cgroup"
)

const usage = `pmvm: a KVM virtual machine monitor whose guests survive host kernel updates

usage:
  pmvm run CONFIG.toml [--log-level LEVEL] [--host-config FILE]
                                              run a VM in the foreground until it powers off, in
                                              its own cgroup (host config: $PMVM_HOST_CONFIG, else
                                              /etc/pmvm/host.toml; if none exists, no cgroup)
  pmvm run CONFIG.toml --incoming FILE        resume the suspended guest saved in FILE
  pmvm check CONFIG.toml [--json]             can each memory block honour the VM's mode? (0 ok, 1 refused, 2 usage)
  pmvm status NAME [--json]                   runstate, vCPUs, memory, uptime, last transition
  pmvm suspend NAME [--timeout D]             suspend the guest to RAM (ACPI S3) through its agent
  pmvm wakeup NAME                            wake a suspended guest
  pmvm save NAME --state FILE [--timeout D]   suspend (if running), save the state durably, exit
  pmvm state inspect FILE [--json]            show a state file's header and every section
  pmvm host update --kernel K [--initrd I] (--cmdline C | --reuse-cmdline) [--dry-run] [--no-reboot] [--config F]
                                              save every VM, kexec into kernel K
  pmvm host restore [--config F]              resume the VMs saved by a host update (run at boot)
  pmvm version

NAME finds the control socket /run/pmvm/NAME/control.sock ($PMVM_RUNTIME_DIR
overrides /run/pmvm; --control PATH names the socket directly).

exit codes of "pmvm run":
  0  the guest powered off (ACPI S5), or was saved to a state file
  1  pmvm failed (the message says why)
  2  bad usage or invalid config
  3  the guest asked for a reboot (pmvm does not reboot it: the supervisor decides)
  4  stopped by the host (SIGINT/SIGTERM or the control socket)
`

// Exit codes of pmvm run.
const (
	exitPowerOff = 0
	exitFailure  = 1
	exitUsage    = 2
	exitReboot   = 3
	exitStopped  = 4
)

var version = "dev"

// processStart is when this process began, the first step of a resume timeline.
var processStart = time.Now()

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

func runMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "suspend":
		return cmdSuspend(args[1:], stdout, stderr)
	case "wakeup":
		return cmdWakeup(args[1:], stdout, stderr)
	case "save":
		return cmdSave(args[1:], stdout, stderr)
	case "state":
		return cmdState(args[1:], stdout, stderr)
	case "host":
		return cmdHost(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "pmvm", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "pmvm: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}

// parseInterleaved parses flags that may come before or after positional
// arguments ("pmvm run x.toml --log-level debug").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func newLogger(level string, stderr io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Logger{}, fmt.Errorf("--log-level %q: use trace, debug, info, warn or error", level)
	}
	var w io.Writer = stderr
	if f, ok := stderr.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05.000"}
		}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pmvm run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	incoming := fs.String("incoming", "", "resume the suspended guest saved in this state file")
	hostConfig := fs.String("host-config", "", "host config with the cgroup parent and default [limits] (default $"+hostConfigEnv+", else "+configs.DefaultHostConfig+")")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "pmvm run: want exactly one CONFIG.toml, got %d arguments\n", len(pos))
		return exitUsage
	}
	log, err := newLogger(*logLevel, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "pmvm run:", err)
		return exitUsage
	}
	cfg, err := configs.Load(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "pmvm run: invalid config:\n%v\n", err)
		return exitUsage
	}
	log = log.With().Str("vm", cfg.Name).Logger()
	host, err := findHostConfig(*hostConfig)
	if err != nil {
		fmt.Fprintf(stderr, "pmvm run: invalid host config:\n%v\n", err)
		return exitUsage
	}

	if *incoming == "" {
		if err := refuseColdBootOverSaved(cfg, host, pos[0]); err != nil {
			fmt.Fprintf(stderr, "pmvm run: %v\n", err)
			return exitFailure
		}
	}

	outcome, err := runVM(cfg, host, log, stdout, stderr, *incoming)
	if err != nil {
		fmt.Fprintf(stderr, "pmvm run: %v\n", err)
		if errors.Is(err, pmem.ErrModeRefused) || errors.Is(err, pmem.ErrMisfit) {
			return exitUsage // the config asks for what its memory cannot give
		}
		return exitFailure
	}
	switch outcome {
	case vmm.OutcomePowerOff, vmm.OutcomeSaved:
		return exitPowerOff
	case vmm.OutcomeReset:
		return exitReboot
	case vmm.OutcomeStopped:
		return exitStopped
	default:
		return exitFailure
	}
}

// refuseColdBootOverSaved refuses to boot a VM afresh while the host's
// state_dir holds its saved guest: the new boot would overwrite the memory
// that guest is suspended in. pmvm host update saves there, and a restore
// that failed leaves the file in place for the operator.
func refuseColdBootOverSaved(cfg *configs.VM, h runHost, cfgPath string) error {
	if h.host == nil {
		return nil
	}
	p := h.host.StatePath(cfg.Name)
	if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	what := "a state file"
	if f, err := state.ReadFile(p); err == nil {
		what = fmt.Sprintf("the guest saved %s by pmvm %s", f.Header.Created.UTC().Format(time.RFC3339), f.Header.PMVMVersion)
	} else {
		what = fmt.Sprintf("a state file that does not read (%v)", err)
	}
	return fmt.Errorf("VM %q has %s in %s (state_dir of host config %s): booting it afresh would overwrite the memory that guest is suspended in. "+
		"Resume it: pmvm run %s --incoming %s; or, to discard that guest for good, move the file out of %s first", cfg.Name, what, p, h.path, cfgPath, p, h.host.StateDir)
}

// hostConfigEnv names the host config when --host-config does not.
const hostConfigEnv = "PMVM_HOST_CONFIG"

// runHost is the host config pmvm run takes its cgroup from.
type runHost struct {
	path, from string        // where it was looked for, and why there
	host       *configs.Host // nil: nothing at path
}

// findHostConfig loads the host config named by --host-config, else
// $PMVM_HOST_CONFIG, else the default path. A path where nothing exists
// is no host config (pmvm host restore passes its own path even when it
// runs on the defaults); one that exists must be valid.
func findHostConfig(flagPath string) (runHost, error) {
	h := runHost{path: flagPath, from: "--host-config"}
	if h.path == "" {
		h.path, h.from = os.Getenv(hostConfigEnv), "$"+hostConfigEnv
	}
	if h.path == "" {
		h.path, h.from = configs.DefaultHostConfig, "the default"
	}
	if _, err := os.Stat(h.path); errors.Is(err, os.ErrNotExist) {
		return h, nil
	}
	host, err := configs.LoadHost(h.path)
	if err != nil {
		return h, err
	}
	h.host = host
	return h, nil
}

// joinCgroup moves this pmvm into the VM's cgroup with its limits, made as
// pmvm host restore makes it, so that the VM runs in the same cgroup with
// the same limits before and after a host update.
func joinCgroup(cfg *configs.VM, h runHost, log zerolog.Logger) error {
	switch {
	case h.host == nil:
		log.Info().Str("host_config", h.path).Msgf("no host config (%s): no cgroup of the VM's own, pmvm stays in the one it was started in", h.from)
		return nil
	case !h.host.Limits.CgroupsEnabled():
		log.Info().Str("host_config", h.path).Msg("cgroups = false in the host config: no cgroup of the VM's own")
		return nil
	}
	if err := cgroup.CheckPids(cfg, h.host.Limits); err != nil {
		return fmt.Errorf("cgroups: %w (host config %s)", err, h.path)
	}
	lim := cgroup.LimitsFor(cfg, h.host.Limits)
	cg, moved, err := cgroup.Join(cfg.Name, h.host.Limits.CgroupParent, lim)
	if err != nil {
		return fmt.Errorf("%w; nothing was started (cgroup from host config %s)", err, h.path)
	}
	log.Info().Str("cgroup", cg.String()).Str("limits", lim.String()).Bool("moved", moved).Str("host_config", h.path).Msg("running in the VM's cgroup")
	return nil
}

func runVM(cfg *configs.VM, host runHost, log zerolog.Logger, stdout, stderr io.Writer, incomingPath string) (vmm.Outcome, error) {
	// Memory that cannot honour the VM's mode, a kernel that is not one,
	// a host without KVM: refused before anything is created (cgroup,
	// console file, sockets); vmm.New checks the memory again.
	if err := vmm.Preflight(cfg, incomingPath != ""); err != nil {
		return vmm.OutcomeError, err
	}
	// Before guest memory is mapped and vCPU threads start, so that every
	// page and thread of this VM is in its cgroup.
	if err := joinCgroup(cfg, host, log); err != nil {
		return vmm.OutcomeError, err
	}
	var resume *vmm.Timeline
	var incoming *vmm.Incoming
	if incomingPath != "" {
		// Check the state file, the config and the backings before any
		// guest memory is mapped: a refusal must leave the guest untouched.
		resume = vmm.NewTimeline("resume", "process start", processStart)
		var err error
		if incoming, err = vmm.CheckIncoming(cfg, incomingPath); err != nil {
			return vmm.OutcomeError, err
		}
		resume.Mark("state file and backings checked")
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
	console, closeConsole, err := openConsole(cfg.Console, stdout)
	if err != nil {
		return vmm.OutcomeError, err
	}
	defer closeConsole()

	agent, err := vmm.ListenSerial(cfg.Agent.Socket)
	if err != nil {
		return vmm.OutcomeError, fmt.Errorf("agent socket: %w", err)
	}
	defer agent.Close()

	m, err := vmm.New(cfg, vmm.Options{Log: log, Console: console, Agent: agent})
	if err != nil {
		return vmm.OutcomeError, err
	}
	defer m.Close()
	if incoming == nil {
		if err := m.Boot(); err != nil {
			return vmm.OutcomeError, err
		}
	} else {
		resume.Mark("memory mapped")
		if err := m.Restore(incoming); err != nil {
			return vmm.OutcomeError, err
		}
		resume.Mark("state loaded")
	}
	line := agentLine{agent}
	m.OnWake(func(why string) {
		ctx, cancel := context.WithTimeout(context.Background(), setTimeBudget)
		defer cancel()
		if err := guestpm.SetTimeAfterWake(ctx, line, log); err != nil {
			log.Warn().Err(err).Msg("guest clock may be off after wake")
		}
	})
	ctl, err = vmm.ServeControl(cfg.Control.Socket, m, log, map[string]vmm.CommandFunc{
		"suspend": func(ctx context.Context, _ vmm.ControlRequest) vmm.ControlResponse {
			if _, err := guestpm.Suspend(ctx, agentMachine{m}, line, log); err != nil {
				return vmm.ControlResponse{Error: err.Error()}
			}
			st := m.Status()
			return vmm.ControlResponse{OK: true, Status: &st}
		},
		"save": func(ctx context.Context, req vmm.ControlRequest) vmm.ControlResponse {
			return save(ctx, m, line, log, req.State)
		},
	})
	if err != nil {
		return vmm.OutcomeError, fmt.Errorf("control socket: %w", err)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	resumed := make(chan error, 1)
	if incoming != nil {
		go func() {
			// Wake waits for the vCPU threads Run starts to park.
			if err := m.Wake("resume from " + incomingPath); err != nil {
				m.Stop()
				resumed <- fmt.Errorf("resume from %s: %w", incomingPath, err)
				return
			}
			resume.Mark("vCPUs running")
			fmt.Fprint(stderr, resume.String())
			resume.Log(log)
			// The guest runs on: its state file must never be resumed again.
			moved, merr := state.MoveAsideResumed(incomingPath)
			switch {
			case moved != "" && merr == nil:
				log.Info().Str("state", moved).Msg("state file moved aside: it cannot be resumed again")
			case moved == "":
				log.Error().Err(merr).Str("state", incomingPath).Msg("the guest runs, but its state file is still in place: REMOVE IT BY HAND, resuming it again would corrupt the guest")
			case merr != nil:
				log.Warn().Err(merr).Msg("state file moved aside, not yet durably")
			}
			resumed <- nil
		}()
	} else {
		resumed <- nil
	}
	log.Info().Int("vcpus", cfg.VCPUs).Str("memory", configs.FormatSize(cfg.TotalMemory())).Bool("resume", incoming != nil).Msg("starting guest")
	outcome, err := m.Run(ctx)
	if rerr := <-resumed; rerr != nil {
		return vmm.OutcomeError, rerr
	}
	if err != nil {
		return outcome, err
	}
	if outcome == vmm.OutcomeError {
		return outcome, errors.New("machine failed")
	}
	return outcome, nil
}

// save suspends the guest through its agent if it is running, writes its
// state file durably and ends this process once the answer is sent.
func save(ctx context.Context, m *vmm.Machine, line agentLine, log zerolog.Logger, path string) vmm.ControlResponse {
	if path == "" {
		return vmm.ControlResponse{Error: "save needs a state file path (pmvm save NAME --state FILE)"}
	}
	if !filepath.IsAbs(path) {
		return vmm.ControlResponse{Error: fmt.Sprintf("state file path %q must be absolute: pmvm runs in its own directory", path)}
	}
	if err := m.CheckSaveable(path); err != nil {
		return vmm.ControlResponse{Error: err.Error()}
	}
	tl := vmm.NewTimeline("save", "save requested", time.Now())
	suspendedHere := false
	if m.RunState() == vmm.StateRunning {
		if _, err := guestpm.Suspend(ctx, agentMachine{m}, line, log); err != nil {
			return vmm.ControlResponse{Error: err.Error(), Timeline: tl}
		}
		suspendedHere = true
		tl.Mark("guest in S3")
	}
	if err := m.SaveState(path, version); err != nil {
		msg := err.Error()
		if suspendedHere {
			// This save suspended the guest; it must not stay stopped for
			// a save that did not happen.
			if werr := m.Wake("save failed"); werr != nil {
				msg += fmt.Sprintf("; waking the guest again failed too (%v): pmvm wakeup it", werr)
			} else {
				msg += "; the guest was woken again"
			}
		}
		return vmm.ControlResponse{Error: msg, Timeline: tl}
	}
	tl.Mark("state durable")
	tl.Log(log)
	st := m.Status()
	return vmm.ControlResponse{OK: true, Status: &st, Timeline: tl, After: m.Finish}
}

// setTimeBudget bounds how long pmvm keeps trying to set the guest clock
// after a wake while the guest agent comes back.
const setTimeBudget = 60 * time.Second

// agentLine lends the COM2 socket bridge to guestpm.
type agentLine struct{ p *vmm.SerialPort }

func (l agentLine) Borrow(ctx context.Context) (io.ReadWriteCloser, func(), error) {
	return l.p.Borrow(ctx)
}

// agentMachine shows guestpm the machine's runstate.
type agentMachine struct{ m *vmm.Machine }

func (a agentMachine) RunState() string { return string(a.m.RunState()) }
func (a agentMachine) WaitSuspended(ctx context.Context) error {
	_, err := a.m.WaitRunState(ctx, vmm.StateSuspended)
	return err
}

func openConsole(c configs.Console, stdout io.Writer) (io.Writer, func(), error) {
	switch c.Output {
	case configs.ConsoleFile:
		f, err := os.OpenFile(c.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("console file: %w", err)
		}
		return f, func() { f.Close() }, nil
	case configs.ConsoleNone:
		return io.Discard, func() {}, nil
	default:
		return stdout, func() {}, nil
	}
}
