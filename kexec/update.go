package kexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/lifecycle"
	"github.com/pmvm/pmvm/vmm/timeline"
)

// Options are how Update runs.
type Options struct {
	Log zerolog.Logger
	Out io.Writer // live progress, per-VM results, the timeline
	// NoReboot stops after the kernel is loaded and the timeline written:
	// every VM is saved and its pmvm has exited. Bring them back with
	// `pmvm host restore` (after a kexec or not), or reboot by hand.
	NoReboot bool
	// PMVM runs pmvm to resume saved VMs if the update is rolled back
	// (argv prefix, as RestoreOptions.PMVM).
	PMVM []string
	// Load, Unload and Reboot default to LoadFile, Unload and (SystemdKexec
	// under systemd, else Reboot). Tests on hosts without kexec replace them.
	Load   func(kernel, initrd, cmdline string) error
	Unload func() error
	Reboot func() error
}

// Errors of Update, to tell apart with errors.Is.
var (
	// ErrRolledBack: the update failed after it began suspending VMs and
	// every VM was brought back as it was; nothing was kexec'd.
	ErrRolledBack = errors.New("host update failed and was rolled back: every VM runs as before and nothing was kexec'd")
	// ErrRollbackIncomplete: the update failed and some VM could not be
	// brought back: it needs the operator (the message says which and why).
	ErrRollbackIncomplete = errors.New("host update failed and the rollback is INCOMPLETE: some VMs need attention")
)

// SaveResult is one VM's save.
type SaveResult struct {
	VM        string
	StatePath string
	Took      time.Duration // from the save request to pmvm's exit
	Err       error
}

// RollbackResult is what the rollback did for one VM.
type RollbackResult struct {
	VM     string
	Action string // what was done ("resumed from its state file", "woken", "still running", ...)
	Err    error  // the VM is not back
}

// LostVM is a VM the update leaves to the kexec, unsaved
// (Plan.SkipUnsaveable).
type LostVM struct {
	VM, Config string
	Why        string
}

// Result is the outcome of Update.
type Result struct {
	Saves    []SaveResult
	Lost     []LostVM // killed unsaved by the kexec (--skip-unsaveable)
	Rollback []RollbackResult
	Loaded   bool // the new kernel is loaded (and not unloaded)
	Timeline *timeline.Timeline
}

// pmvmExitWait is how long a saved VM's pmvm may take to exit.
const pmvmExitWait = 30 * time.Second

// Update carries every VM of plan over a kexec into plan.Kernel:
//
//  1. the pre-save hook (failing: nothing was touched; stop);
//  2. every VM saved in parallel: its pmvm suspends the guest through its
//     agent (unless suspended already), writes its state file durably and
//     exits; each state file is read back;
//  3. the kernel loaded with kexec_file_load;
//  4. the pre-kexec hook, then a second look at what runs: a VM that
//     appeared since the plan refuses the kexec;
//  5. the timeline written (fsync'd) to state_dir/update-timeline.json;
//  6. the reboot into the new kernel (unless NoReboot).
//
// From the start to the rollback or the kexec, the update marker in
// runtime_dir makes pmvm run refuse to start VMs (lifecycle.MarkUpdate).
// If step 2, 3, 4, 5 or 6 fails, the update is rolled back: every saved VM
// is resumed from its state file (pmvm run --incoming, detached, as at
// boot), every VM left suspended by a failed save is woken, the kernel is
// unloaded, the on-failure hook runs, and the error wraps ErrRolledBack or
// ErrRollbackIncomplete. A plan that refuses (Plan.Err) is returned as is:
// nothing is touched.
func Update(ctx context.Context, plan *Plan, opts Options) (*Result, error) {
	if err := plan.Err(); err != nil {
		return nil, err
	}
	if len(opts.PMVM) == 0 {
		return nil, errors.New("update: no pmvm command to resume VMs with on a rollback")
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Load == nil {
		opts.Load = LoadFile
	}
	if opts.Unload == nil {
		opts.Unload = Unload
	}
	if opts.Reboot == nil {
		opts.Reboot = defaultReboot
	}
	host := plan.Host
	lock, err := lockHost(host.RuntimeDir, "update")
	if err != nil {
		return nil, err
	}
	defer lock.release()
	if err := os.MkdirAll(host.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	if err := os.MkdirAll(host.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("log_dir: %w", err)
	}

	// From here until the rollback, or the kexec, pmvm run starts no VM:
	// the kexec would kill it unsaved.
	if err := lifecycle.MarkUpdate(host.RuntimeDir, "kernel "+plan.Kernel); err != nil {
		return nil, fmt.Errorf("%w; nothing was touched", err)
	}
	u := &updater{plan: plan, opts: opts, host: host, out: opts.Out, log: opts.Log}
	defer func() {
		if !u.keepMarker {
			u.unmark()
		}
	}()
	u.tl = NewTimeline(time.Now())
	u.tl.Kernel, u.tl.Initrd, u.tl.Cmdline = plan.Kernel, plan.Initrd, plan.Cmdline
	if v := plan.KernelInfo.Release(); v != "" {
		u.tl.Kernel = v
	}
	u.res = &Result{Timeline: u.tl}
	u.tl.Mark("", StepUpdateStarted, fmt.Sprintf("%d VM(s), kernel %s", len(plan.Carried()), plan.Kernel))
	return u.res, u.run(ctx)
}

func defaultReboot() error {
	if SystemdRunning() {
		return SystemdKexec()
	}
	return Reboot()
}

type updater struct {
	plan *Plan
	opts Options
	host *configs.Host
	out  io.Writer
	log  zerolog.Logger
	tl   *timeline.Timeline
	res  *Result
	// keepMarker keeps the update marker once the VMs are saved for good
	// (the kexec was started, or --no-reboot): pmvm host restore removes it.
	keepMarker bool
}

// unmark removes the update marker: pmvm run may start VMs again.
func (u *updater) unmark() {
	if err := lifecycle.UnmarkUpdate(u.host.RuntimeDir); err != nil {
		u.log.Error().Err(err).Msg("pmvm run stays refused until the marker is removed by hand")
		fmt.Fprintf(u.out, "  %v: pmvm run refuses to start VMs until it is removed by hand\n", err)
	}
}

func (u *updater) env(phase string) HookEnv {
	e := HookEnv{Phase: phase, Kernel: u.plan.Kernel, Timeline: u.host.TimelinePath()}
	for _, v := range u.plan.Carried() {
		e.VMs = append(e.VMs, v.Name)
		e.States = append(e.States, v.StatePath)
	}
	return e
}

// lose records v as left to the kexec, unsaved, and says so.
func (u *updater) lose(name, config, why string) {
	u.res.Lost = append(u.res.Lost, LostVM{VM: name, Config: config, Why: why})
	fmt.Fprintf(u.out, "VM %q will be killed unsaved by the kexec (--skip-unsaveable): %s\n", name, firstLine(why))
	u.log.Warn().Str("vm", name).Str("why", why).Msg("left to the kexec unsaved (--skip-unsaveable)")
}

func (u *updater) run(ctx context.Context) error {
	vms := u.plan.Carried()
	for _, v := range u.plan.Skipped() {
		u.lose(v.Name, v.Config, v.Reason)
	}
	// 1. pre-save: nothing is touched yet, so a failure just stops.
	if h := u.host.Hooks.PreSave; h != nil {
		fmt.Fprintf(u.out, "pre-save hook: %s\n", strings.Join(h.Command, " "))
		if err := RunHook(ctx, h, u.env(configs.PhasePreSave), u.log); err != nil {
			err = fmt.Errorf("%w; no VM was suspended", err)
			u.onFailure(ctx, err)
			return err
		}
		u.tl.Mark("", StepPreSaveHook, "")
	}

	// 2. save every VM in parallel.
	fmt.Fprintf(u.out, "saving %d VM(s) to %s:\n", len(vms), u.host.StateDir)
	names := make([]string, len(vms))
	for i, v := range vms {
		names[i] = v.Name
	}
	prog := newProgress(u.out, names)
	u.res.Saves = make([]SaveResult, len(vms))
	var wg sync.WaitGroup
	for i, v := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.res.Saves[i] = u.save(v, prog)
		}()
	}
	wg.Wait()
	prog.close()
	var saveErrs []error
	for i, s := range u.res.Saves {
		switch {
		case s.Err == nil:
		case u.plan.SkipUnsaveable:
			u.lose(s.VM, vms[i].Config, "its save failed: "+s.Err.Error())
		default:
			saveErrs = append(saveErrs, fmt.Errorf("VM %q: %w", s.VM, s.Err))
		}
	}
	if len(saveErrs) > 0 {
		return u.rollback(ctx, fmt.Errorf("saving failed:\n%s", indent(errors.Join(saveErrs...).Error())))
	}

	if ctx.Err() != nil {
		return u.rollback(ctx, fmt.Errorf("cancelled after the saves: %w", ctx.Err()))
	}

	// 3. load the kernel.
	fmt.Fprintf(u.out, "loading %s\n", u.plan.Kernel)
	if err := u.opts.Load(u.plan.Kernel, u.plan.Initrd, u.plan.Cmdline); err != nil {
		return u.rollback(ctx, err)
	}
	u.res.Loaded = true
	u.tl.Mark("", StepKernelLoaded, u.plan.Kernel)

	if ctx.Err() != nil {
		return u.rollback(ctx, fmt.Errorf("cancelled after the kernel load: %w", ctx.Err()))
	}

	// 4. pre-kexec.
	if h := u.host.Hooks.PreKexec; h != nil {
		fmt.Fprintf(u.out, "pre-kexec hook: %s\n", strings.Join(h.Command, " "))
		if err := RunHook(ctx, h, u.env(configs.PhasePreKexec), u.log); err != nil {
			return u.rollback(ctx, err)
		}
		u.tl.Mark("", StepPreKexecHook, "")
	}

	// The plan was made before the saves: a VM that appeared since (its
	// pmvm started before the marker, or a saved one runs again) would be
	// killed unsaved by the kexec.
	if err := u.recheck(); err != nil {
		return u.rollback(ctx, err)
	}

	// 5. the timeline, durable before the reboot.
	if u.opts.NoReboot {
		u.tl.Mark("", "stopped before the kexec (--no-reboot)", "")
	} else {
		u.tl.Mark("", StepKexec, "")
	}
	if err := timeline.Write(u.host.TimelinePath(), u.tl); err != nil {
		return u.rollback(ctx, fmt.Errorf("write the timeline: %w", err))
	}
	fmt.Fprintln(u.out)
	FormatTimeline(u.out, u.tl)
	LogTimeline(u.tl, u.log)
	if u.opts.NoReboot {
		u.keepMarker = true
		fmt.Fprintf(u.out, "\nevery VM is saved and the new kernel is loaded; not rebooting (--no-reboot).\n"+
			"kexec with `systemctl kexec` (or reboot), then `pmvm host restore`; or run `pmvm host restore` now to resume the VMs on this kernel.\n")
		return nil
	}

	// 6. reboot. Reboot returns only on failure; SystemdKexec returns
	// once systemd took the job, and then stops us with everything else.
	fmt.Fprintf(u.out, "\nkexec into %s\n", u.plan.Kernel)
	if err := u.opts.Reboot(); err != nil {
		return u.rollback(ctx, err)
	}
	u.keepMarker = true
	return nil
}

// recheck looks again, right before the kexec, at what runs on the host:
// every VM of vm_dir whose pmvm answers, and every pmvm run process. The
// update's own VMs may only be saved (their pmvm about to exit); anything
// else would be killed unsaved by the kexec.
func (u *updater) recheck() error {
	carried := map[string]bool{}
	for _, v := range u.plan.Carried() {
		carried[canonical(v.Config)] = true
	}
	var found []string
	reported := map[string]bool{} // also: left to the kexec on purpose
	for _, l := range u.res.Lost {
		reported[canonical(l.Config)] = true
	}
	files, _ := filepath.Glob(filepath.Join(u.host.VMDir, "*.toml"))
	sort.Strings(files)
	for _, file := range files {
		if reported[canonical(file)] {
			continue
		}
		cfg, err := configs.Load(file)
		if err != nil {
			continue
		}
		st, running, err := askStatus(cfg)
		switch {
		case err != nil:
			found = append(found, fmt.Sprintf("VM %q (%s): %v", cfg.Name, file, err))
		case !running || st.RunState == vmm.StateSaved && carried[canonical(file)]:
			continue
		case carried[canonical(file)]:
			found = append(found, fmt.Sprintf("VM %q (%s) was saved but its pmvm answers %s again", cfg.Name, file, st.RunState))
		default:
			found = append(found, fmt.Sprintf("VM %q (%s) appeared during the update (its pmvm answers %s)", cfg.Name, file, st.RunState))
		}
		reported[canonical(file)] = true
	}
	for _, s := range findPMVMRuns() {
		if !carried[s.config] && !reported[s.config] {
			found = append(found, fmt.Sprintf("pmvm process %d (pmvm run %s) appeared during the update", s.pid, s.config))
		}
	}
	if len(found) == 0 {
		return nil
	}
	return fmt.Errorf("a VM appeared during the update, which the kexec would kill unsaved; not kexecing:\n%s", indent(strings.Join(found, "\n")))
}

// save saves one VM and waits for its pmvm to exit.
func (u *updater) save(v PlanVM, prog *progress) SaveResult {
	res := SaveResult{VM: v.Name, StatePath: v.StatePath}
	log := u.log.With().Str("vm", v.Name).Logger()
	start := time.Now()
	fail := func(err error) SaveResult {
		res.Err, res.Took = err, time.Since(start)
		u.tl.Mark(v.Name, StepSaveFailed, err.Error())
		prog.set(v.Name, "FAILED: "+firstLine(err.Error()), true)
		log.Error().Err(err).Msg("save failed")
		return res
	}
	if v.RunState == string(vmm.StateRunning) {
		prog.set(v.Name, "suspending through the guest agent, then saving", false)
	} else {
		prog.set(v.Name, "saving (already suspended)", false)
	}
	u.tl.Add(start, v.Name, lifecycle.StepSaveRequested, "was "+v.RunState)
	saved, err := lifecycle.RequestSave(v.Control, v.StatePath, u.host.SaveTimeout.Std())
	if saved != nil {
		if ev := saved.Sorted(); len(ev) > 0 {
			for _, s := range ev[1:] { // the first is the request
				u.tl.Add(s.At, v.Name, s.What, "")
			}
		}
	}
	if err != nil {
		return fail(err)
	}
	prog.set(v.Name, "state durable; waiting for pmvm to exit", false)
	// pmvm exits once it has answered; until then it holds the VM's
	// sockets and memory lock, which a rollback needs.
	switch lifecycle.WaitExited(v.Control, pmvmExitWait, u.tl, v.Name) {
	case lifecycle.PMVMRunning:
		log.Warn().Str("control", v.Control).Msg("pmvm has not exited after saving; the kexec will end it")
	case lifecycle.PMVMDied:
		log.Warn().Str("control", v.Control).Msg("pmvm died after saving, without closing its control socket; the state file is read back below")
	}
	// Read the state file back: what the new kernel's pmvm will read.
	f, err := state.ReadFile(v.StatePath)
	if err != nil {
		return fail(fmt.Errorf("the state file does not read back: %w", err))
	}
	if f.Header.VMName != v.Name {
		return fail(fmt.Errorf("the state file %s holds VM %q", v.StatePath, f.Header.VMName))
	}
	res.Took = time.Since(start)
	prog.set(v.Name, fmt.Sprintf("saved in %s -> %s", fmtDur(res.Took), v.StatePath), true)
	log.Info().Dur("took", res.Took).Str("state", v.StatePath).Msg("saved")
	return res
}

// rollback brings every VM back after a failed update and returns the
// error to report: cause wrapped with ErrRolledBack or
// ErrRollbackIncomplete.
func (u *updater) rollback(ctx context.Context, cause error) error {
	// Bringing the VMs back must not be cut short by the cancellation
	// that may have caused it.
	ctx = context.WithoutCancel(ctx)
	fmt.Fprintf(u.out, "\nupdate FAILED: %v\nrolling back:\n", cause)
	// No kexec follows any more: VMs may start again (the rollback's own
	// resumes first).
	u.unmark()
	u.tl.Mark("", StepRollback, firstLine(cause.Error()))
	if u.res.Loaded {
		if err := u.opts.Unload(); err != nil {
			u.log.Error().Err(err).Msg("could not unload the new kernel")
			fmt.Fprintf(u.out, "  could not unload the new kernel: %v\n", err)
		} else {
			u.res.Loaded = false
		}
	}
	vms := u.plan.Carried()
	saves := map[string]SaveResult{}
	for _, s := range u.res.Saves {
		saves[s.VM] = s
	}
	r := &restorer{host: u.host, hostConfig: u.plan.HostConfig, pmvm: u.opts.PMVM, log: u.log, tl: u.tl, tlPath: u.host.TimelinePath()}
	names := make([]string, len(vms))
	for i, v := range vms {
		names[i] = v.Name
	}
	prog := newProgress(u.out, names)
	results := make([]RollbackResult, len(vms))
	var wg sync.WaitGroup
	for i, v := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, tried := saves[v.Name]
			results[i] = u.rollbackVM(ctx, r, v, s, tried, prog)
		}()
	}
	wg.Wait()
	prog.close()
	u.res.Rollback = results

	var lost []error
	for _, rb := range results {
		if rb.Err != nil {
			lost = append(lost, fmt.Errorf("VM %q: %w", rb.VM, rb.Err))
		}
	}
	if err := timeline.Write(u.host.TimelinePath(), u.tl); err != nil {
		u.log.Error().Err(err).Msg("cannot write the timeline")
	}
	fmt.Fprintln(u.out)
	FormatTimeline(u.out, u.tl)
	LogTimeline(u.tl, u.log)

	var err error
	if len(lost) > 0 {
		err = fmt.Errorf("%w:\n%s\ncause: %w", ErrRollbackIncomplete, indent(errors.Join(lost...).Error()), cause)
	} else {
		err = fmt.Errorf("%w; cause: %w", ErrRolledBack, cause)
	}
	u.onFailure(ctx, err)
	return err
}

// rollbackVM brings one VM back to how the update found it.
func (u *updater) rollbackVM(ctx context.Context, r *restorer, v PlanVM, s SaveResult, tried bool, prog *progress) RollbackResult {
	rb := RollbackResult{VM: v.Name}
	resume := func(why string) RollbackResult {
		prog.set(v.Name, "resuming from "+v.StatePath, false)
		res := r.restoreVM(ctx, v.Name, v.Config, v.cfg, v.StatePath, prog)
		if res.Err != nil {
			rb.Err = res.Err
			return rb
		}
		rb.Action = fmt.Sprintf("resumed from its state file (%s; pmvm pid %d)", why, res.PID)
		return rb
	}
	if tried && s.Err == nil {
		return resume("it was saved")
	}
	if !tried {
		// The update failed before this VM's save was asked: untouched.
		rb.Action = "untouched"
		prog.set(v.Name, rb.Action, true)
		return rb
	}
	// The save failed: find out where the VM is now.
	deadline := time.Now().Add(pmvmExitWait)
	for {
		resp, err := vmm.CallControl(v.Control, vmm.ControlRequest{Command: "status", Timeout: statusTimeout.Milliseconds()})
		switch {
		case err != nil && notListening(err):
			// pmvm is gone. If it wrote its state file during this update,
			// resume from it; otherwise the guest cannot be resumed.
			began, _ := u.tl.Last("", StepUpdateStarted)
			if f, ferr := state.ReadFile(v.StatePath); ferr == nil && f.Header.VMName == v.Name && f.Header.Created.After(began.Add(-time.Second)) {
				return resume("pmvm exited after writing it")
			}
			rb.Err = fmt.Errorf("its pmvm is gone and no state file was written during this update: the guest cannot be resumed (its memory is still in its backing, untouched); see its pmvm log")
			prog.set(v.Name, "LOST: pmvm gone, no state file", true)
			return rb
		case err != nil:
			rb.Err = fmt.Errorf("its control socket does not answer (%v): check it by hand (pmvm status)", err)
			prog.set(v.Name, "UNKNOWN: control socket does not answer", true)
			return rb
		}
		st := resp.Status
		if st == nil {
			rb.Err = fmt.Errorf("status failed: %s", resp.Error)
			return rb
		}
		switch st.RunState {
		case vmm.StateRunning:
			u.tl.Mark(v.Name, StepNeverStopped, "")
			rb.Action = "still running (its save failed before the guest was suspended)"
			prog.set(v.Name, rb.Action, true)
			return rb
		case vmm.StateSuspended:
			if v.RunState == string(vmm.StateSuspended) {
				rb.Action = "left suspended, as it was before the update"
				prog.set(v.Name, rb.Action, true)
				return rb
			}
			prog.set(v.Name, "waking", false)
			if _, err := lifecycle.RequestWake(v.Control, 30*time.Second); err != nil {
				rb.Err = fmt.Errorf("suspended by the update and the wakeup failed: %v (try pmvm wakeup %s)", err, v.Name)
				prog.set(v.Name, "FAILED to wake", true)
				return rb
			}
			u.tl.Mark(v.Name, StepWoken, "")
			u.tl.Mark(v.Name, StepRunning, "woken")
			rb.Action = "woken (the update had suspended it)"
			prog.set(v.Name, rb.Action, true)
			return rb
		}
		// saving, saved, waking: transient; wait for it to settle.
		if time.Now().After(deadline) {
			rb.Err = fmt.Errorf("it stays %s: check it by hand (pmvm status)", st.RunState)
			prog.set(v.Name, "UNKNOWN: "+string(st.RunState), true)
			return rb
		}
		prog.set(v.Name, "waiting: "+string(st.RunState), false)
		time.Sleep(50 * time.Millisecond)
	}
}

// onFailure runs the on-failure hook.
func (u *updater) onFailure(ctx context.Context, cause error) {
	h := u.host.Hooks.OnFailure
	if h == nil {
		return
	}
	env := u.env(configs.PhaseOnFailure)
	env.Error = cause.Error()
	// The on-failure hook runs even if the update was cancelled.
	if err := RunHook(context.WithoutCancel(ctx), h, env, u.log); err != nil {
		fmt.Fprintf(u.out, "on-failure hook failed too: %v\n", err)
	}
}
