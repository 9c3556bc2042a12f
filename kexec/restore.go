package kexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/cgroup"
	"github.com/pmvm/pmvm/vmm/lifecycle"
	"github.com/pmvm/pmvm/vmm/timeline"
)

// RestoreOptions are how Restore runs.
type RestoreOptions struct {
	Log zerolog.Logger
	Out io.Writer // the live progress, the per-VM report and the timeline
	// PMVM is the command that runs pmvm (argv prefix; "run CONFIG
	// --incoming STATE" is appended). The CLI passes its own executable.
	PMVM []string
	// HostConfig is the path host was loaded from (or would have been, if
	// it does not exist): each pmvm run gets it as --host-config so that it
	// takes its cgroup from the same config.
	HostConfig string
}

// RestoreResult is what happened to one state file.
type RestoreResult struct {
	VM        string
	StateFile string
	Config    string
	MovedTo   string // the state file's new name once the VM runs
	LogFile   string // its pmvm run's log (stderr)
	Console   string // the guest console, when the VM's config sends it to stdout
	Cgroup    string
	PID       int
	Started   time.Time     // pmvm run --incoming started
	Running   time.Time     // the VM reported running
	Took      time.Duration // from start to running
	Err       error         // the VM is not running again (or ran and stopped)
	HookErr   error         // the post-restore hook failed (the VM runs)
}

// RestoreReport is the outcome of Restore.
type RestoreReport struct {
	Results      []RestoreResult
	Ignored      []string // files of state_dir that are not state files, with why
	Timeline     *timeline.Timeline
	TimelineFile string // where the timeline was written (or archived)
}

// Failed returns the results with an error.
func (r *RestoreReport) Failed() []RestoreResult {
	var out []RestoreResult
	for _, res := range r.Results {
		if res.Err != nil || res.HookErr != nil {
			out = append(out, res)
		}
	}
	return out
}

// restorePoll is how often a starting VM's control socket is asked.
const restorePoll = 10 * time.Millisecond

// resumedMarker is what pmvm run --incoming prints once the guest's vCPUs
// run again (its resume timeline).
const resumedMarker = lifecycle.StepVCPUsRunning

// Restore brings back every VM saved in host.StateDir: for each
// <something>.state file it finds the config in host.VMDir whose name is
// the file's VM, starts `pmvm run CONFIG --incoming STATE` detached (own
// session, output to log_dir/<name>.log, own cgroup), waits until the VM
// reports running, then renames the state file to
// <name>.state.resumed-<time> and runs the post-restore hook. A state file
// is never moved before its VM runs; a VM that fails leaves its file and
// its memory untouched and does not stop the others. The timeline of the
// update is completed and printed.
func Restore(ctx context.Context, host *configs.Host, opts RestoreOptions) (*RestoreReport, error) {
	if len(opts.PMVM) == 0 {
		return nil, errors.New("restore: no pmvm command to run")
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	lock, err := lockHost(host.RuntimeDir, "restore")
	if err != nil {
		return nil, err
	}
	defer lock.release()
	// The update that saved these VMs is over (after --no-reboot its
	// marker is still there): VMs may start again, these first.
	if err := lifecycle.UnmarkUpdate(host.RuntimeDir); err != nil {
		return nil, err
	}

	rep := &RestoreReport{}
	files, err := filepath.Glob(filepath.Join(host.StateDir, "*.state"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	type job struct {
		name, file string
		err        error
	}
	var jobs []job
	byName := map[string][]int{}
	for _, f := range files {
		sf, err := state.ReadFile(f)
		switch {
		case errors.Is(err, state.ErrNotStateFile):
			rep.Ignored = append(rep.Ignored, fmt.Sprintf("%s: not a pmvm state file", f))
			continue
		case err != nil:
			name := strings.TrimSuffix(filepath.Base(f), ".state")
			jobs = append(jobs, job{name: name, file: f, err: fmt.Errorf("cannot read it: %w; it is left as it is", err)})
			continue
		}
		byName[sf.Header.VMName] = append(byName[sf.Header.VMName], len(jobs))
		jobs = append(jobs, job{name: sf.Header.VMName, file: f})
	}
	for name, idx := range byName {
		if len(idx) > 1 {
			var names []string
			for _, i := range idx {
				names = append(names, jobs[i].file)
			}
			for _, i := range idx {
				jobs[i].err = fmt.Errorf("several state files hold VM %q (%s): restoring one could resume an old guest; keep only the newest and retry", name, strings.Join(names, ", "))
			}
		}
	}
	for _, ig := range rep.Ignored {
		fmt.Fprintln(out, "ignored:", ig)
	}
	if len(jobs) == 0 {
		fmt.Fprintf(out, "nothing to restore: no state file in %s\n", host.StateDir)
		return rep, nil
	}
	if err := os.MkdirAll(host.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("log_dir: %w", err)
	}

	tlPath := host.TimelinePath()
	tl, err := timeline.Read(tlPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		tl = NewTimeline(time.Now())
		tl.FromKernel = ""
		fmt.Fprintf(out, "no update timeline in %s: these VMs were saved outside a host update\n", host.StateDir)
	case err != nil:
		opts.Log.Warn().Err(err).Msg("timeline unreadable; starting a new one")
		tl = NewTimeline(time.Now())
		tl.FromKernel = ""
	}
	markBoot(tl, out)

	cfgs := loadVMConfigs(host.VMDir, opts.Log)
	r := &restorer{host: host, hostConfig: opts.HostConfig, pmvm: opts.PMVM, log: opts.Log, tl: tl, tlPath: tlPath}
	names := make([]string, len(jobs))
	for i, j := range jobs {
		names[i] = j.name
	}
	fmt.Fprintf(out, "restoring %d VM(s) from %s:\n", len(jobs), host.StateDir)
	prog := newProgress(out, names)
	results := make([]RestoreResult, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if j.err != nil {
				tl.Mark(j.name, StepRestoreFailed, j.err.Error())
				results[i] = RestoreResult{VM: j.name, StateFile: j.file, Err: j.err}
				prog.set(j.name, "FAILED: "+firstLine(j.err.Error()), true)
				return
			}
			c, ok := cfgs[j.name]
			if !ok {
				err := fmt.Errorf("no config in %s names VM %q; the state file is left as it is (add the config and run pmvm host restore again)", host.VMDir, j.name)
				tl.Mark(j.name, StepRestoreFailed, err.Error())
				results[i] = RestoreResult{VM: j.name, StateFile: j.file, Err: err}
				prog.set(j.name, "FAILED: no config", true)
				return
			}
			res := r.restoreVM(ctx, j.name, c.path, c.cfg, j.file, prog)
			if res.Err == nil {
				res.HookErr = r.postRestore(ctx, res)
			}
			results[i] = res
		}()
	}
	wg.Wait()
	prog.close()
	rep.Results = results
	rep.Timeline = tl

	failed := 0
	for _, res := range results {
		if res.Err != nil {
			failed++
		}
	}
	tl.Mark("", StepRestoreDone, fmt.Sprintf("%d of %d VM(s) running", len(results)-failed, len(results)))
	fmt.Fprintln(out)
	printRestore(out, results)
	fmt.Fprintln(out)
	FormatTimeline(out, tl)
	LogTimeline(tl, opts.Log)

	rep.TimelineFile = tlPath
	if err := timeline.Write(tlPath, tl); err != nil {
		opts.Log.Error().Err(err).Msg("cannot write the timeline")
	} else if failed == 0 {
		// The update is complete: archive its timeline so the next one
		// starts afresh.
		archived := filepath.Join(host.StateDir, "update-timeline-"+tl.ID+".json")
		if err := os.Rename(tlPath, archived); err == nil {
			state.SyncDir(host.StateDir)
			rep.TimelineFile = archived
		}
	}
	fmt.Fprintf(out, "timeline: %s\n", rep.TimelineFile)

	var errs []error
	for _, res := range rep.Failed() {
		if res.Err != nil {
			errs = append(errs, fmt.Errorf("VM %q: %w", res.VM, res.Err))
		} else {
			errs = append(errs, fmt.Errorf("VM %q runs, but %w", res.VM, res.HookErr))
		}
	}
	return rep, errors.Join(errs...)
}

// markBoot adds "kernel booted" when this kernel started after the update
// began (otherwise no reboot happened since: --no-reboot, or a restore
// without an update).
func markBoot(tl *timeline.Timeline, out io.Writer) {
	bt, err := BootTime()
	if err != nil {
		return
	}
	started, ok := tl.Last("", StepUpdateStarted)
	if ok && !bt.After(started) {
		fmt.Fprintf(out, "note: this kernel booted at %s, before the update started: no kexec happened since (--no-reboot?)\n", bt.Local().Format("15:04:05.000"))
		return
	}
	tl.Add(bt, "", StepKernelBooted, kernelRelease())
}

type vmConfig struct {
	path string
	cfg  *configs.VM
}

// loadVMConfigs loads every config of dir by VM name; configs that do not
// load are logged and left out.
func loadVMConfigs(dir string, log zerolog.Logger) map[string]vmConfig {
	files, _ := filepath.Glob(filepath.Join(dir, "*.toml"))
	sort.Strings(files)
	out := map[string]vmConfig{}
	for _, f := range files {
		cfg, err := configs.Load(f)
		if err != nil {
			log.Warn().Err(err).Str("config", f).Msg("VM config does not load; skipped")
			continue
		}
		if other, dup := out[cfg.Name]; dup {
			log.Warn().Str("config", f).Str("also", other.path).Str("vm", cfg.Name).Msg("two configs name the same VM; the first one is used")
			continue
		}
		out[cfg.Name] = vmConfig{path: f, cfg: cfg}
	}
	return out
}

// restorer starts saved VMs again; Restore and an update's rollback share it.
type restorer struct {
	host       *configs.Host
	hostConfig string // passed on as pmvm run --host-config, when set
	pmvm       []string
	log        zerolog.Logger
	tl         *timeline.Timeline
	tlPath     string
}

// restoreVM runs VM name from statePath and waits until it runs.
func (r *restorer) restoreVM(ctx context.Context, name, cfgPath string, cfg *configs.VM, statePath string, prog *progress) RestoreResult {
	res := RestoreResult{VM: name, StateFile: statePath, Config: cfgPath, LogFile: filepath.Join(r.host.LogDir, name+".log")}
	log := r.log.With().Str("vm", name).Logger()
	fail := func(err error) RestoreResult {
		res.Err = err
		r.tl.Mark(name, StepRestoreFailed, err.Error())
		prog.set(name, "FAILED: "+firstLine(err.Error()), true)
		log.Error().Err(err).Msg("restore failed")
		return res
	}

	// A VM that answers already must not get a second pmvm on its memory.
	if resp, err := vmm.CallControl(cfg.Control.Socket, vmm.ControlRequest{Command: "status", Timeout: statusTimeout.Milliseconds()}); err == nil && resp.Status != nil {
		return fail(fmt.Errorf("VM %q is already running (%s on %s); %s is left as it is: if that VM is the restored one, the file is stale: remove it", name, resp.Status.RunState, cfg.Control.Socket, statePath))
	}

	prog.set(name, "starting pmvm run --incoming", false)
	logf, err := os.OpenFile(res.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fail(fmt.Errorf("log file: %w", err))
	}
	defer logf.Close()
	logStart, _ := logf.Seek(0, io.SeekEnd)
	argv := append(append([]string{}, r.pmvm...), "run", cfgPath, "--incoming", statePath)
	if r.hostConfig != "" {
		// pmvm run joins the cgroup made here, so it must read the same
		// host config (absolute: it runs in /).
		hc, err := filepath.Abs(r.hostConfig)
		if err != nil {
			return fail(fmt.Errorf("host config path: %w", err))
		}
		argv = append(argv, "--host-config", hc)
	}
	fmt.Fprintf(logf, "=== %s pmvm host restore: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	// A console on stdout gets a file of its own: the UART writes a byte
	// at a time and pmvm's log lines would land in the middle of the
	// guest's.
	var consolef *os.File
	if cfg.Console.Output == "" || cfg.Console.Output == configs.ConsoleStdout {
		res.Console = filepath.Join(r.host.LogDir, name+".console.log")
		if consolef, err = os.OpenFile(res.Console, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640); err != nil {
			return fail(fmt.Errorf("console file: %w", err))
		}
		defer consolef.Close()
	}

	var cg *cgroup.Group
	if r.host.Limits.CgroupsEnabled() {
		cg, err = cgroup.New(name, r.host.Limits.CgroupParent, cgroup.LimitsFor(cfg, r.host.Limits))
		if err != nil {
			return fail(fmt.Errorf("%w; nothing was started, %s is left as it is (or set [limits] cgroups = false)", err, statePath))
		}
		res.Cgroup = cg.String()
	}

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Stderr = logf
	if consolef != nil {
		cmd.Stdout = consolef
	}
	cmd.Env = append(os.Environ(), "PMVM_RUNTIME_DIR="+r.host.RuntimeDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cgroup.Start(cmd, cg); err != nil {
		if cg != nil {
			cg.Delete()
		}
		return fail(fmt.Errorf("start %s: %w; %s is left as it is", argv[0], err, statePath))
	}
	res.PID = cmd.Process.Pid
	res.Started = time.Now()
	r.tl.Add(res.Started, name, StepRestoreStarted, fmt.Sprintf("pid %d", res.PID))
	log.Info().Int("pid", res.PID).Str("log", res.LogFile).Str("cgroup", res.Cgroup).Msg("pmvm run --incoming started")
	prog.set(name, fmt.Sprintf("pid %d: resuming", res.PID), false)

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaps it whenever it ends

	deadline := time.NewTimer(r.host.RestoreTimeout.Std())
	defer deadline.Stop()
	tick := time.NewTicker(restorePoll)
	defer tick.Stop()
	for {
		select {
		case werr := <-exited:
			return r.exitedEarly(res, nil, werr, logf.Name(), logStart, fail)
		case <-ctx.Done():
			unix.Kill(-res.PID, unix.SIGKILL)
			return r.exitedEarly(res, fmt.Errorf("cancelled (%w); pmvm was killed", ctx.Err()), <-exited, logf.Name(), logStart, fail)
		case <-deadline.C:
			unix.Kill(-res.PID, unix.SIGKILL)
			return r.exitedEarly(res, fmt.Errorf("its control socket did not report running within restore_timeout %s; pmvm was killed", r.host.RestoreTimeout), <-exited, logf.Name(), logStart, fail)
		case <-tick.C:
		}
		resp, err := vmm.CallControl(cfg.Control.Socket, vmm.ControlRequest{Command: "status", Timeout: statusTimeout.Milliseconds()})
		if err != nil || resp.Status == nil {
			continue
		}
		if resp.Status.RunState == vmm.StateRunning {
			res.Running = resp.Status.Since
			if res.Running.IsZero() || res.Running.Before(res.Started) {
				res.Running = time.Now()
			}
			break
		}
		prog.set(name, fmt.Sprintf("pid %d: %s", res.PID, resp.Status.RunState), false)
	}
	res.Took = res.Running.Sub(res.Started)
	r.tl.Add(res.Running, name, StepRunning, fmt.Sprintf("woken from S3, pid %d", res.PID))
	log.Info().Dur("took", res.Took).Msg("VM running again")
	if err := r.moveAside(&res); err != nil {
		return fail(err)
	}
	prog.set(name, fmt.Sprintf("running (pid %d) after %s", res.PID, fmtDur(res.Took)), true)
	return res
}

// exitedEarly handles a pmvm that ended (werr is its Wait result) before
// it reported running; cause is why it was killed, nil if it exited by
// itself. If the guest did run (the exit status says it powered off or
// asked for a reboot, or the log shows its vCPUs ran), the state file is
// stale and is moved aside; otherwise it is left for a retry.
func (r *restorer) exitedEarly(res RestoreResult, cause, werr error, logPath string, logStart int64, fail func(error) RestoreResult) RestoreResult {
	code := 0
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		code = ee.ExitCode() // -1 when killed by a signal
	} else if werr != nil {
		code = -1
	}
	logTail := tailOf(logPath, logStart)
	why := cause
	if why == nil {
		why = fmt.Errorf("pmvm run --incoming exited (status %d) before its VM reported running", code)
	}
	ran := (cause == nil && (code == 0 || code == 3)) || strings.Contains(logTail, resumedMarker)
	tail := lastLines(logTail, 4)
	if ran {
		res.Running = time.Now()
		r.tl.Add(res.Running, res.VM, StepRunning, "then pmvm ended")
		if err := r.moveAside(&res); err != nil {
			return fail(fmt.Errorf("%v; the guest ran, and %w", why, err))
		}
		return fail(fmt.Errorf("%v; the guest did run (its state file is now %s) and pmvm ended: see %s (%s)", why, res.MovedTo, res.LogFile, tail))
	}
	if _, err := os.Lstat(res.StateFile); errors.Is(err, fs.ErrNotExist) {
		if spent := state.LastResumed(res.StateFile); spent != "" {
			// pmvm spends the state file just before the wake: it ended
			// between the two, or during the wake.
			res.MovedTo = spent
			return fail(fmt.Errorf("%v; pmvm had moved %s aside to %s just before waking the guest, so it is not resumed twice: see %s (%s). "+
				"If that log shows the wake never began, the guest did not run and the file can be moved back to resume it", why, res.StateFile, spent, res.LogFile, tail))
		}
	}
	return fail(fmt.Errorf("%v; %s and the guest's memory are untouched: see %s (%s)", why, res.StateFile, res.LogFile, tail))
}

// moveAside renames the state file of a VM that runs again, so that no
// later restore resumes the old state over the guest's newer memory.
func (r *restorer) moveAside(res *RestoreResult) error {
	// pmvm run --incoming moves it aside itself before it wakes the
	// vCPUs (then this finds where it went); this covers a pmvm that did
	// not.
	to, err := state.MoveAsideResumed(res.StateFile)
	if to == "" {
		return fmt.Errorf("the VM runs but its state file %s could not be moved aside (%v): REMOVE IT BY HAND before the next boot, or a restore would resume the old state over the running guest's memory", res.StateFile, err)
	}
	res.MovedTo = to
	r.tl.Mark(res.VM, StepStateMoved, filepath.Base(to))
	return nil
}

// postRestore runs the post-restore hook for one VM.
func (r *restorer) postRestore(ctx context.Context, res RestoreResult) error {
	h := r.host.Hooks.PostRestore
	if h == nil {
		return nil
	}
	err := RunHook(ctx, h, HookEnv{Phase: configs.PhasePostRestore, VMs: []string{res.VM}, States: []string{res.MovedTo}, Timeline: r.tlPath}, r.log.With().Str("vm", res.VM).Logger())
	if err == nil {
		r.tl.Mark(res.VM, StepPostRestore, "")
	}
	return err
}

// tailOf reads what was appended to a log file from offset on (at most
// the last 64 KiB).
func tailOf(path string, from int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	if st.Size()-from > 64<<10 {
		from = st.Size() - 64<<10
	}
	b := make([]byte, st.Size()-from)
	n, _ := f.ReadAt(b, from)
	return string(b[:n])
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	var keep []string
	for _, l := range lines {
		if strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "=== ") {
			keep = append(keep, strings.TrimSpace(l))
		}
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	if len(keep) == 0 {
		return "no output"
	}
	return "last output: " + strings.Join(keep, " | ")
}

// printRestore writes the per-VM report.
func printRestore(w io.Writer, results []RestoreResult) {
	var b bytes.Buffer
	for _, res := range results {
		if res.Err != nil {
			fmt.Fprintf(&b, "%s: FAILED: %v\n", res.VM, res.Err)
			continue
		}
		fmt.Fprintf(&b, "%s: running (pid %d) %s after pmvm started; state file moved to %s; log %s", res.VM, res.PID, fmtDur(res.Took), res.MovedTo, res.LogFile)
		if res.Console != "" {
			fmt.Fprintf(&b, "; console %s", res.Console)
		}
		if res.Cgroup != "" {
			fmt.Fprintf(&b, "; cgroup %s", res.Cgroup)
		}
		b.WriteString("\n")
		if res.HookErr != nil {
			fmt.Fprintf(&b, "%s: post-restore hook FAILED: %v\n", res.VM, res.HookErr)
		}
	}
	w.Write(b.Bytes())
}
