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

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/kexec"
)

const hostUsage = `usage:
  pmvm host update --kernel FILE [--initrd FILE] (--cmdline STRING | --reuse-cmdline)
                   [--dry-run] [--no-reboot] [--skip-unsaveable] [--config FILE] [--log-level LEVEL]
      carry every VM of vm_dir over a kexec into FILE: pre-save hook, save
      every VM in parallel, kexec_file_load, pre-kexec hook, reboot. Any
      failure rolls back (every VM runs again, nothing is kexec'd). While it
      runs, pmvm run starts no VM.
      --dry-run          check everything, print the plan, touch nothing
      --no-reboot        stop after loading the kernel (every VM saved)
      --skip-unsaveable  go ahead without the VMs that cannot be carried over
                         (refused by the plan, or whose save fails): the kexec
                         KILLS THEM UNSAVED; the plan names them first. Without
                         it, one such VM refuses or rolls back the whole update.
  pmvm host restore [--config FILE] [--log-level LEVEL]
      at boot: resume every VM saved in state_dir, run the post-restore
      hook, print the timeline across the kexec with each VM's blackout

--config defaults to /etc/pmvm/host.toml (built-in defaults if it does not
exist); see configs/examples/host/host.toml.

exit codes of "pmvm host update":
  0  rebooting into the new kernel (--no-reboot: saved and loaded; --dry-run: the plan is fine)
  1  refused before anything was touched, or failed and rolled back: every VM runs as before
  2  bad usage or invalid host config
  3  failed and the rollback is incomplete: the message names the VMs that need attention
exit codes of "pmvm host restore":
  0  every saved VM runs again (or there was nothing to restore)
  1  some VM could not be restored (its state file is left in place) or a hook failed
  2  bad usage or invalid host config
`

// exitRollbackIncomplete is host update's exit code when a VM could not be
// brought back after a failure.
const exitRollbackIncomplete = 3

// Seams for tests on a build host without kexec_file_load; nil means the
// kexec package's real functions.
var (
	kexecLoad   func(kernel, initrd, cmdline string) error
	kexecUnload func() error
	kexecStatus func() kexec.Status
	kexecReboot func() error
)

// pmvmCommand is the command a restore runs pmvm with: this executable.
var pmvmCommand = func() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find the pmvm executable to run restored VMs: %w", err)
	}
	return []string{exe}, nil
}

// cmdHost is "pmvm host SUBCOMMAND".
func cmdHost(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, hostUsage)
		return exitUsage
	}
	switch args[0] {
	case "update":
		return cmdHostUpdate(args[1:], stdout, stderr)
	case "restore":
		return cmdHostRestore(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, hostUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "pmvm host: unknown subcommand %q\n\n%s", args[0], hostUsage)
		return exitUsage
	}
}

// loadHostConfig loads path; the default path may be missing (defaults).
func loadHostConfig(path string, explicit bool, stderr io.Writer) (*configs.Host, bool) {
	if !explicit {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "pmvm host: %s does not exist; using the defaults\n", path)
			return configs.DefaultHost(), true
		}
	}
	h, err := configs.LoadHost(path)
	if err != nil {
		fmt.Fprintf(stderr, "pmvm host: invalid host config:\n%v\n", err)
		return nil, false
	}
	return h, true
}

// hostLogger logs to stderr at level and, unless toFile is false, to
// log_dir/host.log at info level and above.
func hostLogger(level string, host *configs.Host, toFile bool, stderr io.Writer) (zerolog.Logger, func(), error) {
	console, err := newLogger(level, stderr)
	if err != nil {
		return zerolog.Logger{}, nil, err
	}
	if !toFile {
		return console, func() {}, nil
	}
	if err := os.MkdirAll(host.LogDir, 0o755); err != nil {
		return zerolog.Logger{}, nil, fmt.Errorf("log_dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(host.LogDir, "host.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return zerolog.Logger{}, nil, fmt.Errorf("log_dir: %w", err)
	}
	lvl, _ := zerolog.ParseLevel(strings.ToLower(level))
	consoleW := levelFilter{min: lvl, w: stderrWriter(stderr)}
	fileW := levelFilter{min: zerolog.InfoLevel, w: f}
	log := zerolog.New(zerolog.MultiLevelWriter(consoleW, fileW)).Level(min(lvl, zerolog.InfoLevel)).With().Timestamp().Logger()
	return log, func() { f.Close() }, nil
}

// stderrWriter is the console form of stderr (as newLogger picks it).
func stderrWriter(stderr io.Writer) io.Writer {
	if f, ok := stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05.000"}
		}
	}
	return stderr
}

// levelFilter passes events of at least min to w.
type levelFilter struct {
	min zerolog.Level
	w   io.Writer
}

func (l levelFilter) Write(p []byte) (int, error) { return l.w.Write(p) }
func (l levelFilter) WriteLevel(lvl zerolog.Level, p []byte) (int, error) {
	if lvl < l.min {
		return len(p), nil
	}
	return l.w.Write(p)
}

func cmdHostUpdate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pmvm host update", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, hostUsage) }
	config := fs.String("config", configs.DefaultHostConfig, "host config")
	kernel := fs.String("kernel", "", "the bzImage to kexec into (required)")
	initrd := fs.String("initrd", "", "its initrd (none if not given)")
	cmdline := fs.String("cmdline", "", "the new kernel's command line")
	reuse := fs.Bool("reuse-cmdline", false, "reuse this kernel's command line (/proc/cmdline without BOOT_IMAGE=)")
	dryRun := fs.Bool("dry-run", false, "check everything and print the plan; suspend nothing")
	noReboot := fs.Bool("no-reboot", false, "stop after loading the kernel, before the reboot")
	skipUnsaveable := fs.Bool("skip-unsaveable", false, "go ahead without the VMs that cannot be carried over: the kexec kills them unsaved")
	logLevel := fs.String("log-level", "warn", "log level on stderr (log_dir/host.log gets info and above)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case len(pos) > 0:
		fmt.Fprintf(stderr, "pmvm host update: unexpected argument %q\n", pos[0])
		return exitUsage
	case *kernel == "":
		fmt.Fprintln(stderr, "pmvm host update: --kernel FILE is required")
		return exitUsage
	case set["cmdline"] && *reuse:
		fmt.Fprintln(stderr, "pmvm host update: give --cmdline or --reuse-cmdline, not both")
		return exitUsage
	case !set["cmdline"] && !*reuse:
		fmt.Fprintln(stderr, "pmvm host update: give the new kernel's command line with --cmdline STRING, or --reuse-cmdline to keep this kernel's (a kernel without root= would not boot)")
		return exitUsage
	}
	if *reuse {
		c, err := kexec.ReuseCmdline()
		if err != nil {
			fmt.Fprintln(stderr, "pmvm host update:", err)
			return exitFailure
		}
		*cmdline = c
	}
	for _, p := range []*string{kernel, initrd} {
		if *p != "" {
			if abs, err := filepath.Abs(*p); err == nil {
				*p = abs
			}
		}
	}
	host, ok := loadHostConfig(*config, set["config"], stderr)
	if !ok {
		return exitUsage
	}
	log, closeLog, err := hostLogger(*logLevel, host, !*dryRun, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "pmvm host update:", err)
		return exitUsage
	}
	defer closeLog()

	plan := kexec.NewPlan(host, kexec.PlanOptions{HostConfig: *config, Kernel: *kernel, Initrd: *initrd, Cmdline: *cmdline, KexecStatus: kexecStatus, SkipUnsaveable: *skipUnsaveable})
	if *dryRun {
		fmt.Fprintln(stdout, "host update plan (dry run: nothing is suspended, loaded or written)")
	} else {
		fmt.Fprintln(stdout, "host update plan")
	}
	plan.Print(stdout)
	if err := plan.Err(); err != nil {
		log.Error().Err(err).Msg("host update refused")
		return exitFailure
	}
	if *dryRun {
		return 0
	}
	fmt.Fprintln(stdout)

	pmvm, err := pmvmCommand()
	if err != nil {
		fmt.Fprintln(stderr, "pmvm host update:", err)
		return exitFailure
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	log.Info().Str("kernel", *kernel).Int("vms", len(plan.Carried())).Bool("no_reboot", *noReboot).Msg("host update starts")
	_, err = kexec.Update(ctx, plan, kexec.Options{
		Log: log, Out: stdout, NoReboot: *noReboot, PMVM: pmvm,
		Load: kexecLoad, Unload: kexecUnload, Reboot: kexecReboot,
	})
	switch {
	case err == nil:
		log.Info().Msg("host update done")
		return 0
	case errors.Is(err, kexec.ErrRollbackIncomplete):
		fmt.Fprintf(stderr, "pmvm host update: %v\n", err)
		return exitRollbackIncomplete
	default:
		fmt.Fprintf(stderr, "pmvm host update: %v\n", err)
		return exitFailure
	}
}

func cmdHostRestore(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pmvm host restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, hostUsage) }
	config := fs.String("config", configs.DefaultHostConfig, "host config")
	logLevel := fs.String("log-level", "warn", "log level on stderr (log_dir/host.log gets info and above)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "pmvm host restore: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	host, ok := loadHostConfig(*config, set["config"], stderr)
	if !ok {
		return exitUsage
	}
	log, closeLog, err := hostLogger(*logLevel, host, true, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "pmvm host restore:", err)
		return exitUsage
	}
	defer closeLog()
	pmvm, err := pmvmCommand()
	if err != nil {
		fmt.Fprintln(stderr, "pmvm host restore:", err)
		return exitFailure
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if _, err := kexec.Restore(ctx, host, kexec.RestoreOptions{Log: log, Out: stdout, PMVM: pmvm, HostConfig: *config}); err != nil {
		fmt.Fprintf(stderr, "pmvm host restore: %v\n", err)
		return exitFailure
	}
	return 0
}
