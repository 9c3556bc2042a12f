package kexec

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/lifecycle"
	"github.com/pmvm/pmvm/vmm/timeline"
)

// loadRecorder stands in for kexec_file_load and counts calls.
type loadRecorder struct {
	mu                      sync.Mutex
	loads, unloads, boots   int
	loadErr, rebootErr      error
	kernel, initrd, cmdline string
}

func (r *loadRecorder) options(o Options) Options {
	o.Load = func(k, i, c string) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.loads++
		r.kernel, r.initrd, r.cmdline = k, i, c
		return r.loadErr
	}
	o.Unload = func() error { r.mu.Lock(); defer r.mu.Unlock(); r.unloads++; return nil }
	o.Reboot = func() error { r.mu.Lock(); defer r.mu.Unlock(); r.boots++; return r.rebootErr }
	return o
}

func hookToFile(t *testing.T, dir, name string) (*configs.Hook, string) {
	file := filepath.Join(dir, name+".env")
	return &configs.Hook{Command: []string{writeScript(t, dir, name+".sh", "env >> "+file+"; echo --- >> "+file)}, Timeout: configs.NewDuration(10 * time.Second)}, file
}

func resumedFiles(t *testing.T, dir, name string) []string {
	m, err := filepath.Glob(filepath.Join(dir, name+".state.resumed-*"))
	require.NoError(t, err)
	return m
}

// TestUpdateRollsBackAFailedSave proves the rollback when one VM's save
// fails: the VM that was saved is resumed from its state file (pmvm run
// CONFIG --incoming STATE started detached, its control socket answers
// "running", the state file is moved aside, not deleted); the VM the
// failed save left suspended is woken; the VM whose save failed while it
// still ran is left running; no kernel is loaded; the on-failure hook runs
// with PMVM_ERROR naming the failed VM; the error wraps ErrRolledBack.
func TestUpdateRollsBackAFailedSave(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	var onFail string
	h.Hooks.OnFailure, onFail = hookToFile(t, root, "onfail")
	saved := startFakeVM(t, h, "saved", kindPreserved, vmm.StateRunning)
	asleep := startFakeVM(t, h, "asleep", kindPreserved, vmm.StateRunning)
	asleep.saveErr, asleep.failTo = "write state file: no space left on device", vmm.StateSuspended
	awake := startFakeVM(t, h, "awake", kindPreserved, vmm.StateRunning)
	awake.saveErr = "the guest agent did not answer; the guest keeps running"
	t.Cleanup(func() { stopRestored(t, saved.control) })

	plan := NewPlan(h, PlanOptions{Kernel: fakeBzImage(t, root), Cmdline: "x", KexecStatus: kexecOK})
	require.NoError(t, plan.Err())
	var rec loadRecorder
	var out bytes.Buffer
	log, _ := testLog()
	res, err := Update(context.Background(), plan, rec.options(Options{Log: log, Out: &out, PMVM: fakePMVMCommand(t)}))
	t.Log("\n" + out.String())
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrRolledBack), "%v", err)
	assert.Contains(t, err.Error(), `VM "asleep": write state file: no space left on device`)
	assert.Contains(t, err.Error(), `VM "awake": the guest agent did not answer`)
	assert.Zero(t, rec.loads, "no kernel is loaded after a failed save")
	assert.Zero(t, rec.boots)

	// saved: resumed from its state file by a detached pmvm run --incoming.
	args, aerr := os.ReadFile(saved.config + ".args")
	require.NoError(t, aerr, "pmvm run --incoming was started for the saved VM")
	assert.Equal(t, "run "+saved.config+" --incoming "+saved.statePath, strings.Split(string(args), "\n")[0])
	assert.Equal(t, h.RuntimeDir, strings.Split(string(args), "\n")[1], "PMVM_RUNTIME_DIR is runtime_dir")
	resp, cerr := vmm.CallControl(saved.control, vmm.ControlRequest{Command: "status", Timeout: 2000})
	require.NoError(t, cerr)
	assert.Equal(t, vmm.StateRunning, resp.Status.RunState)
	assert.NoFileExists(t, saved.statePath)
	assert.Len(t, resumedFiles(t, h.StateDir, "saved"), 1, "the state file is moved aside, never deleted")
	// asleep: woken; awake: left alone.
	assert.Equal(t, []string{"status", "save", "status", "wakeup"}, asleep.commands())
	assert.Equal(t, []string{"status", "save", "status"}, awake.commands())

	byVM := map[string]RollbackResult{}
	for _, rb := range res.Rollback {
		byVM[rb.VM] = rb
		assert.NoError(t, rb.Err, rb.VM)
	}
	assert.Contains(t, byVM["saved"].Action, "resumed from its state file")
	assert.Contains(t, byVM["asleep"].Action, "woken")
	assert.Contains(t, byVM["awake"].Action, "still running")

	env := readEnvFile(t, onFail)
	assert.Equal(t, "on-failure", env["PMVM_PHASE"])
	assert.Contains(t, env["PMVM_ERROR"], "no space left on device")
	assert.Equal(t, "asleep,awake,saved", env["PMVM_VM"], "VMs in vm_dir order")

	tl, terr := timeline.Read(h.TimelinePath())
	require.NoError(t, terr)
	_, rolled := tl.Last("", StepRollback)
	assert.True(t, rolled)
	_, hasKexec := tl.Last("", StepKexec)
	assert.False(t, hasKexec)
	blackouts := map[string]Blackout{}
	for _, b := range Blackouts(tl) {
		blackouts[b.VM] = b
	}
	assert.True(t, blackouts["saved"].Done, "the saved VM's blackout ends when it runs again")
	assert.True(t, blackouts["asleep"].Done, "the woken VM's blackout ends at the wakeup")
	assert.True(t, blackouts["awake"].None, "a VM never suspended had no blackout")
}

// TestUpdateRollsBackAFailedPreKexecHook proves that when every VM is saved
// and the kernel loaded, a failing pre-kexec hook unloads the kernel,
// resumes every VM from its state file and never reboots; and that a
// failing pre-save hook stops the update before any VM is asked to save.
func TestUpdateRollsBackAFailedPreKexecHook(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	h.Hooks.PreKexec = &configs.Hook{Command: []string{writeScript(t, root, "prekexec.sh", "echo refusing; exit 1")}, Timeout: configs.NewDuration(5 * time.Second)}
	a := startFakeVM(t, h, "a", kindPreserved, vmm.StateSuspended)
	b := startFakeVM(t, h, "b", kindPreserved, vmm.StateRunning)
	t.Cleanup(func() { stopRestored(t, a.control); stopRestored(t, b.control) })
	plan := NewPlan(h, PlanOptions{Kernel: fakeBzImage(t, root), Cmdline: "x", KexecStatus: kexecOK})
	require.NoError(t, plan.Err())
	var rec loadRecorder
	var out bytes.Buffer
	log, _ := testLog()
	_, err := Update(context.Background(), plan, rec.options(Options{Log: log, Out: &out, PMVM: fakePMVMCommand(t)}))
	t.Log("\n" + out.String())
	require.ErrorIs(t, err, ErrRolledBack)
	assert.Contains(t, err.Error(), "pre-kexec hook")
	assert.Contains(t, err.Error(), "refusing")
	assert.Equal(t, 1, rec.loads)
	assert.Equal(t, 1, rec.unloads, "the loaded kernel is unloaded")
	assert.Zero(t, rec.boots)
	for _, f := range []*fakeVM{a, b} {
		assert.Len(t, resumedFiles(t, h.StateDir, f.name), 1, f.name)
		resp, err := vmm.CallControl(f.control, vmm.ControlRequest{Command: "status", Timeout: 2000})
		require.NoError(t, err, f.name)
		assert.Equal(t, vmm.StateRunning, resp.Status.RunState, f.name)
	}

	// A failing pre-save hook: no VM is asked to save.
	stopRestored(t, a.control)
	stopRestored(t, b.control)
	c := startFakeVM(t, h, "c", kindPreserved, vmm.StateRunning)
	h2 := *h
	h2.Hooks.PreKexec = nil
	h2.Hooks.PreSave = &configs.Hook{Command: []string{"/bin/false"}, Timeout: configs.NewDuration(5 * time.Second)}
	os.Remove(a.config)
	os.Remove(b.config)
	plan = NewPlan(&h2, PlanOptions{Kernel: fakeBzImage(t, root), Cmdline: "x", KexecStatus: kexecOK})
	require.NoError(t, plan.Err())
	_, err = Update(context.Background(), plan, rec.options(Options{Log: log, Out: &out, PMVM: fakePMVMCommand(t)}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no VM was suspended")
	assert.Equal(t, []string{"status"}, c.commands())
}

// TestUpdateNoRebootThenRestore proves the whole flow with fake VMs: both
// VMs saved in parallel (state files read back), the kernel loaded with
// the plan's kernel, initrd and command line, the pre-save and pre-kexec
// hooks run with the VM list, the timeline written durably with per-VM
// save steps and the kernel load, and --no-reboot stops before the
// reboot. Restore then starts each VM detached, waits for "running",
// moves each state file aside, runs post-restore once per VM (PMVM_VM is
// the one VM), appends to the timeline, prints it with each VM's
// blackout, and archives it.
func TestUpdateNoRebootThenRestore(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	var preSave, preKexec, post string
	h.Hooks.PreSave, preSave = hookToFile(t, root, "presave")
	h.Hooks.PreKexec, preKexec = hookToFile(t, root, "prekexec")
	h.Hooks.PostRestore, post = hookToFile(t, root, "post")
	a := startFakeVM(t, h, "alpha", kindPreserved, vmm.StateRunning)
	b := startFakeVM(t, h, "beta", kindPreserved, vmm.StateSuspended)
	t.Cleanup(func() { stopRestored(t, a.control); stopRestored(t, b.control) })
	kernel := fakeBzImage(t, root)
	initrd := filepath.Join(root, "initrd")
	require.NoError(t, os.WriteFile(initrd, []byte("cpio"), 0o644))

	plan := NewPlan(h, PlanOptions{Kernel: kernel, Initrd: initrd, Cmdline: "console=ttyS0 root=/dev/vda", KexecStatus: kexecOK})
	require.NoError(t, plan.Err())
	var rec loadRecorder
	var out bytes.Buffer
	log, _ := testLog()
	res, err := Update(context.Background(), plan, rec.options(Options{Log: log, Out: &out, NoReboot: true, PMVM: fakePMVMCommand(t)}))
	t.Log("\n" + out.String())
	require.NoError(t, err)
	assert.True(t, res.Loaded)
	assert.Equal(t, 1, rec.loads)
	assert.Equal(t, [3]string{kernel, initrd, "console=ttyS0 root=/dev/vda"}, [3]string{rec.kernel, rec.initrd, rec.cmdline})
	assert.Zero(t, rec.boots, "--no-reboot does not reboot")
	for _, s := range res.Saves {
		assert.NoError(t, s.Err, s.VM)
		assert.FileExists(t, s.StatePath)
	}
	assert.Contains(t, out.String(), "saved in")
	assert.Equal(t, "alpha,beta", readEnvFile(t, preSave)["PMVM_VM"])
	assert.Equal(t, h.StatePath("alpha")+","+h.StatePath("beta"), readEnvFile(t, preKexec)["PMVM_STATE"])
	assert.Equal(t, kernel, readEnvFile(t, preKexec)["PMVM_KERNEL"])
	assert.Equal(t, h.TimelinePath(), readEnvFile(t, preKexec)["PMVM_TIMELINE"])

	tl, err := timeline.Read(h.TimelinePath())
	require.NoError(t, err)
	for _, step := range []struct{ vm, what string }{
		{"", StepUpdateStarted}, {"", StepPreSaveHook}, {"alpha", lifecycle.StepSaveRequested}, {"alpha", lifecycle.StepGuestInS3},
		{"alpha", lifecycle.StepStateDurable}, {"alpha", lifecycle.StepPMVMExited}, {"beta", lifecycle.StepStateDurable}, {"", StepKernelLoaded}, {"", StepPreKexecHook},
	} {
		_, ok := tl.Last(step.vm, step.what)
		assert.True(t, ok, "timeline has %q for %q", step.what, step.vm)
	}

	marker := filepath.Join(h.RuntimeDir, lifecycle.UpdateMarkerName)
	assert.FileExists(t, marker, "saved VMs await the kexec: no VM may start")

	// After the (skipped) reboot: restore.
	var rout bytes.Buffer
	rep, err := Restore(context.Background(), h, RestoreOptions{Log: log, Out: &rout, PMVM: fakePMVMCommand(t)})
	t.Log("\n" + rout.String())
	require.NoError(t, err)
	assert.NoFileExists(t, marker, "the restore ends the update")
	require.Len(t, rep.Results, 2)
	for _, r := range rep.Results {
		assert.NoError(t, r.Err, r.VM)
		assert.NotZero(t, r.PID)
		assert.FileExists(t, r.MovedTo)
		assert.NoFileExists(t, r.StateFile)
		assert.FileExists(t, r.LogFile)
	}
	postEnv, err := os.ReadFile(post)
	require.NoError(t, err)
	assert.Contains(t, string(postEnv), "PMVM_VM=alpha\n")
	assert.Contains(t, string(postEnv), "PMVM_VM=beta\n")
	assert.Contains(t, string(postEnv), "PMVM_PHASE=post-restore\n")
	assert.Contains(t, rout.String(), "note: this kernel booted at", "no kexec happened in this test, and restore says so")
	assert.Contains(t, rout.String(), "blackout (save requested -> running again):")
	bs := Blackouts(rep.Timeline)
	require.Len(t, bs, 2)
	for _, b := range bs {
		assert.True(t, b.Done, b.VM)
		assert.Greater(t, b.Took, time.Duration(0))
	}
	assert.NoFileExists(t, h.TimelinePath(), "a complete update's timeline is archived")
	assert.FileExists(t, rep.TimelineFile)
	assert.Contains(t, filepath.Base(rep.TimelineFile), "update-timeline-")

	// Nothing left: a second restore has nothing to do.
	rout.Reset()
	rep, err = Restore(context.Background(), h, RestoreOptions{Log: log, Out: &rout, PMVM: fakePMVMCommand(t)})
	require.NoError(t, err)
	assert.Empty(t, rep.Results)
	assert.Contains(t, rout.String(), "nothing to restore")
}

// TestUpdateSavesInParallel proves the VMs are saved at the same time, not
// one after the other: with every save taking 300 ms, each VM's save was
// requested before any of them finished, and the phase took well under the
// sum of the saves.
func TestUpdateSavesInParallel(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	names := []string{"alpha", "beta", "gamma"}
	for _, n := range names {
		f := startFakeVM(t, h, n, kindPreserved, vmm.StateRunning)
		f.mu.Lock()
		f.saveTook = 300 * time.Millisecond
		f.mu.Unlock()
		t.Cleanup(func() { stopRestored(t, f.control) })
	}
	plan := NewPlan(h, PlanOptions{Kernel: fakeBzImage(t, root), KexecStatus: kexecOK})
	require.NoError(t, plan.Err())
	var rec loadRecorder
	var out bytes.Buffer
	log, _ := testLog()
	res, err := Update(context.Background(), plan, rec.options(Options{Log: log, Out: &out, NoReboot: true, PMVM: fakePMVMCommand(t)}))
	t.Log("\n" + out.String())
	require.NoError(t, err)
	require.Len(t, res.Saves, len(names))

	tl, err := timeline.Read(h.TimelinePath())
	require.NoError(t, err)
	var lastRequested, firstDurable time.Time
	for _, n := range names {
		req, ok := tl.Last(n, lifecycle.StepSaveRequested)
		require.True(t, ok, n)
		dur, ok := tl.Last(n, lifecycle.StepStateDurable)
		require.True(t, ok, n)
		if req.After(lastRequested) {
			lastRequested = req
		}
		if firstDurable.IsZero() || dur.Before(firstDurable) {
			firstDurable = dur
		}
	}
	assert.True(t, lastRequested.Before(firstDurable), "every save was requested (last at %s) before the first was durable (%s)", lastRequested.Format(time.StampMicro), firstDurable.Format(time.StampMicro))
	start, _ := tl.Last("", StepUpdateStarted)
	loaded, _ := tl.Last("", StepKernelLoaded)
	assert.Less(t, loaded.Sub(start), 3*300*time.Millisecond, "the save phase took less than the saves one after the other")
}

// TestUpdateWithBlankKernelVersion proves that a bzImage whose
// kernel_version string is blank (spaces only) does not crash the update
// (it did: the first word of the version was taken unchecked); the
// timeline then names the kernel by its path.
func TestUpdateWithBlankKernelVersion(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	a := startFakeVM(t, h, "alpha", kindPreserved, vmm.StateRunning)
	t.Cleanup(func() { stopRestored(t, a.control) })
	kernel := fakeBzImageVersion(t, root, "   ")
	plan := NewPlan(h, PlanOptions{Kernel: kernel, KexecStatus: kexecOK})
	require.NoError(t, plan.Err())
	var rec loadRecorder
	var out bytes.Buffer
	log, _ := testLog()
	var res *Result
	var err error
	require.NotPanics(t, func() {
		res, err = Update(context.Background(), plan, rec.options(Options{Log: log, Out: &out, NoReboot: true, PMVM: fakePMVMCommand(t)}))
	})
	t.Log("\n" + out.String())
	require.NoError(t, err)
	assert.Equal(t, kernel, res.Timeline.Kernel, "a blank version names the kernel by its path")
}

// TestUpdateBlocksNewVMsAndRechecksBeforeTheKexec proves that a host
// update marks itself in runtime_dir for its whole duration (pmvm run
// refuses to start a VM while the marker is there), and that a VM that
// appears anyway while the VMs are saved (here: one whose pmvm started
// before the marker, or ignores it) is found by a second look right before
// the kexec: the kexec is refused and the update rolled back, so that VM is
// not killed unsaved; the rollback removes the marker.
func TestUpdateBlocksNewVMsAndRechecksBeforeTheKexec(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	marker := filepath.Join(h.RuntimeDir, lifecycle.UpdateMarkerName)
	seen := filepath.Join(root, "marker-seen")
	h.Hooks.PreSave = &configs.Hook{Command: []string{writeScript(t, root, "presave.sh", "cat "+marker+" > "+seen+" 2>&1 || true")}, Timeout: configs.NewDuration(5 * time.Second)}
	alpha := startFakeVM(t, h, "alpha", kindPreserved, vmm.StateRunning)
	alpha.mu.Lock()
	alpha.saveTook = 300 * time.Millisecond
	alpha.mu.Unlock()
	t.Cleanup(func() { stopRestored(t, alpha.control) })
	plan := NewPlan(h, PlanOptions{Kernel: fakeBzImage(t, root), KexecStatus: kexecOK})
	require.NoError(t, plan.Err())

	// beta starts while alpha is being saved.
	started, updated := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(started)
		for !slicesContains(alpha.commands(), "save") {
			select {
			case <-updated:
				return // the update ended before it saved alpha
			case <-time.After(5 * time.Millisecond):
			}
		}
		startFakeVM(t, h, "beta", kindPreserved, vmm.StateRunning)
	}()
	var rec loadRecorder
	var out bytes.Buffer
	log, _ := testLog()
	_, err := Update(context.Background(), plan, rec.options(Options{Log: log, Out: &out, PMVM: fakePMVMCommand(t)}))
	close(updated)
	<-started
	t.Log("\n" + out.String())
	require.ErrorIs(t, err, ErrRolledBack)
	assert.Contains(t, err.Error(), `VM "beta"`)
	assert.Contains(t, err.Error(), "appeared during the update")
	assert.Zero(t, rec.boots, "no kexec over a VM the update did not save")
	assert.Equal(t, rec.loads, rec.unloads, "the kernel is unloaded")
	b, rerr := os.ReadFile(seen)
	require.NoError(t, rerr, "the marker was there while the VMs were saved")
	assert.Contains(t, string(b), "pid ")
	assert.NoFileExists(t, marker, "the rollback removes the marker")
	resp, cerr := vmm.CallControl(alpha.control, vmm.ControlRequest{Command: "status", Timeout: 2000})
	require.NoError(t, cerr)
	assert.Equal(t, vmm.StateRunning, resp.Status.RunState, "alpha resumed by the rollback")
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestUpdateSkipUnsaveable proves the explicit policy that lets an update
// go ahead without the VMs that cannot be carried over: by default one
// such VM refuses the whole update; with SkipUnsaveable the plan says
// which VMs the kexec will kill unsaved (one refused by the plan, one
// whose guest agent then does not answer), the others are saved, the
// second look before the kexec does not count the lost ones as new, and
// the kexec goes ahead.
func TestUpdateSkipUnsaveable(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	alpha := startFakeVM(t, h, "alpha", kindPreserved, vmm.StateRunning)
	startFakeVM(t, h, "bad", kindModeNone, vmm.StateRunning)
	awake := startFakeVM(t, h, "awake", kindPreserved, vmm.StateRunning)
	awake.saveErr = "the guest agent did not answer; the guest keeps running"
	t.Cleanup(func() { stopRestored(t, alpha.control) })
	kernel := fakeBzImage(t, root)

	plan := NewPlan(h, PlanOptions{Kernel: kernel, KexecStatus: kexecOK})
	require.Error(t, plan.Err(), "all or nothing by default")

	plan = NewPlan(h, PlanOptions{Kernel: kernel, KexecStatus: kexecOK, SkipUnsaveable: true})
	require.NoError(t, plan.Err())
	var pout bytes.Buffer
	plan.Print(&pout)
	t.Log("\n" + pout.String())
	assert.Contains(t, pout.String(), `VM "bad"`)
	assert.Contains(t, pout.String(), "--skip-unsaveable: the kexec will kill 1 VM(s) unsaved")

	var rec loadRecorder
	var out bytes.Buffer
	log, _ := testLog()
	res, err := Update(context.Background(), plan, rec.options(Options{Log: log, Out: &out, PMVM: fakePMVMCommand(t)}))
	t.Log("\n" + out.String())
	require.NoError(t, err)
	assert.Equal(t, 1, rec.boots, "the kexec goes ahead")
	assert.FileExists(t, h.StatePath("alpha"))
	assert.NoFileExists(t, h.StatePath("awake"))
	lost := map[string]string{}
	for _, l := range res.Lost {
		lost[l.VM] = l.Why
	}
	assert.Contains(t, lost["bad"], `mode is "none"`)
	assert.Contains(t, lost["awake"], "guest agent did not answer")
	assert.Len(t, lost, 2)
	assert.Contains(t, out.String(), `VM "awake" will be killed unsaved by the kexec (--skip-unsaveable)`)
	assert.Equal(t, []string{"status", "status", "save"}, awake.commands(), "asked by the two plans, then to save; no rollback, and not counted as new before the kexec")
}
