// Package lifecycle performs the steps of a VM's life, each in one place:
//
//   - run: Run (checks, cgroup, machine, control socket, until the guest
//     stops); it boots or resumes with the functions below;
//   - boot: Open without a Resume;
//   - resume: BeginResume (state file and backings checked), Open (the
//     machine built and its state loaded), VM.Start (the guest woken);
//   - suspend: Suspend; save: Save (suspends first if need be);
//   - stop: VM.Stop (also the control socket's "stop", SIGINT, SIGTERM);
//   - for a pmvm that drives another one over its control socket (the CLI,
//     a host update): RequestSave and WaitExited, RequestSuspend,
//     RequestWake.
//
// The CLI (cmd/pmvm), the host update (kexec) and the benchmarks
// (qa/bench) all go through these functions. Each step that takes time is
// recorded in a timeline.Timeline under the names below.
package lifecycle

// Steps of a VM's timelines. A host update records its VMs' saves under
// the same names, with its own steps (kexec's) around them.
const (
	// A resume (pmvm run --incoming): printed on stderr once the guest runs.
	StepProcessStart = "process start"
	StepChecked      = "state file and backings checked"
	StepMemoryMapped = "memory mapped"
	StepStateLoaded  = "state loaded"
	StepVCPUsRunning = "vCPUs running" // the guest runs again; a host restore looks for it in pmvm's log

	// A save (pmvm save, a host update).
	StepSaveRequested = "save requested" // in a host update, the VM's blackout starts here
	StepGuestInS3     = "guest in S3"
	StepStateDurable  = "state durable"
	StepPMVMExited    = "pmvm exited" // recorded by the pmvm that asked for the save
)
