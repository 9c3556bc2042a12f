// Package lifecycle performs the steps of a VM's life, each in one
// function: run (Run: boot or resume, serve, until the guest stops),
// resume (BeginResume, Open, VM.Start), suspend (Suspend), save (Save),
// wake and stop (VM.Stop, the control socket's "stop", SIGINT/SIGTERM);
// and, for a pmvm that drives another one over its control socket (the
// CLI, a host update), RequestSave, WaitExited, RequestSuspend and
// RequestWake. The CLI, the host update (kexec) and the benchmarks all go
// through these functions; each step that takes time is recorded in a
// timeline.Timeline under the names below.
package lifecycle

// Steps of a VM's timelines. A host update records its VMs' saves under
// the same names (with its own steps, in kexec, around them).
const (
	// A resume (pmvm run --incoming), printed on stderr once it runs.
	StepProcessStart  = "process start"
	StepChecked       = "state file and backings checked"
	StepMemoryMapped  = "memory mapped"
	StepStateLoaded   = "state loaded"
	StepVCPUsRunning  = "vCPUs running"  // the guest runs again; a host restore looks for it in pmvm's log
	StepSaveRequested = "save requested" // a save; in a host update, the VM's blackout starts here
	StepGuestInS3     = "guest in S3"
	StepStateDurable  = "state durable"
	StepPMVMExited    = "pmvm exited" // recorded by the pmvm that asked for the save
)
