// Command pmvm is the operator's CLI: flags, output and exit codes around
// vmm/lifecycle (run, suspend, save, resume) and kexec (host update and
// restore). Exit codes are documented in usage below and the README.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/lifecycle"
)

const usage = `pmvm: a KVM virtual machine monitor whose guests survive host kernel updates

usage:
  pmvm run CONFIG.toml [--log-level LEVEL] [--host-config FILE]
                                              run a VM in the foreground until it powers off, in
                                              its own cgroup (host config: $PMVM_HOST_CONFIG, else
                                              /etc/pmvm/host.toml; if none exists, no cgroup)
  pmvm run CONFIG.toml --incoming FILE        resume the suspended guest saved in FILE
  pmvm run ... --seccomp=false                run without the system call filter (seccomp) that
                                              confines pmvm once its VM is built
  pmvm check CONFIG.toml [--json]             can each memory block honour the VM's mode? (0 ok, 1 refused, 2 usage)
  pmvm status NAME [--json]                   runstate, vCPUs, memory, uptime, last transition
  pmvm suspend NAME [--timeout D]             suspend the guest to RAM (ACPI S3) through its agent
  pmvm wakeup NAME                            wake a suspended guest
  pmvm save NAME --state FILE [--timeout D]   suspend (if running), save the state durably, exit
  pmvm state inspect FILE [--json]            show a state file's header and every section
  pmvm host update --kernel K [--initrd I] (--cmdline C | --reuse-cmdline) [--dry-run] [--no-reboot] [--skip-unsaveable] [--config F]
                                              save every VM, kexec into kernel K
  pmvm host restore [--config F]              resume the VMs saved by a host update (run at boot)
  pmvm version

NAME finds the control socket /run/pmvm/NAME/control.sock ($PMVM_RUNTIME_DIR
overrides /run/pmvm; --control PATH names the socket directly).

exit codes of "pmvm run" (the same for a boot and a resume with --incoming):
  0  the guest powered off (ACPI S5), or was saved to a state file
  1  pmvm failed, or refused at run time: a state file it cannot resume, a
     saved guest in the way, a host update under way, no KVM (the message
     says why, and whether guest memory was touched)
  2  bad usage, an invalid config, or a config this host cannot run: a
     memory backing that does not exist, does not fit the block, or cannot
     honour the VM's mode
  3  the guest asked for a reboot (pmvm does not reboot it: the supervisor decides)
  4  stopped by the host (SIGINT/SIGTERM or the control socket)
Other commands exit 0 on success, 1 on failure, 2 on bad usage.
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

// seccompByDefault is --seccomp's default. A filter binds the whole process
// for good, so tests that run pmvm run inside their own process turn it off.
var seccompByDefault = true

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
	confine := fs.Bool("seccomp", seccompByDefault, "once the VM is built, confine pmvm to the system calls it needs (a refused call fails with EPERM)")
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

	outcome, err := lifecycle.Run(cfg, lifecycle.RunOptions{Log: log, Stdout: stdout, Stderr: stderr, ConfigPath: pos[0],
		Host: host, Incoming: *incoming, Started: processStart, Version: version, Seccomp: *confine})
	if err != nil {
		fmt.Fprintf(stderr, "pmvm run: %v\n", err)
		if configRefused(err) {
			return exitUsage
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

// configRefused reports whether Run refused the config itself, on a boot
// or a resume alike: it asks for memory this host cannot give (a backing
// that does not exist, does not fit, or cannot honour the VM's mode).
func configRefused(err error) bool {
	for _, e := range []error{pmem.ErrModeRefused, pmem.ErrMisfit, pmem.ErrSizeMismatch, lifecycle.ErrBackingMissing} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// hostConfigEnv names the host config when --host-config does not.
const hostConfigEnv = "PMVM_HOST_CONFIG"

// findHostConfig loads the host config named by --host-config, else
// $PMVM_HOST_CONFIG, else the default path. A path where nothing exists
// is no host config (pmvm host restore passes its own path even when it
// runs on the defaults); one that exists must be valid.
func findHostConfig(flagPath string) (lifecycle.HostConfig, error) {
	h := lifecycle.HostConfig{Path: flagPath, From: "--host-config"}
	if h.Path == "" {
		h.Path, h.From = os.Getenv(hostConfigEnv), "$"+hostConfigEnv
	}
	if h.Path == "" {
		h.Path, h.From = configs.DefaultHostConfig, "the default"
	}
	if _, err := os.Stat(h.Path); errors.Is(err, os.ErrNotExist) {
		return h, nil
	}
	host, err := configs.LoadHost(h.Path)
	if err != nil {
		return h, err
	}
	h.Host = host
	return h, nil
}
