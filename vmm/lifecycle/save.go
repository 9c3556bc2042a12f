package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/guestpm"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/timeline"
)

// Machine is what suspend and save need of a running machine;
// *vmm.Machine is one (tests use fakes).
type Machine interface {
	RunState() vmm.RunState
	WaitRunState(ctx context.Context, want ...vmm.RunState) (vmm.RunState, error)
	CheckSaveable(path string) error
	SaveState(path, version string) error
	Wake(why string) error
	WakeOnSuspend(wake bool, why string)
}

// Suspend asks the guest agent on agent to suspend the guest to RAM (ACPI
// S3) and waits until the machine is in S3. The guest is never forced: on
// failure it keeps running or finishes its own suspend.
func Suspend(ctx context.Context, m Machine, agent guestpm.Line, log zerolog.Logger) error {
	_, err := guestpm.Suspend(ctx, agentMachine{m}, agent, log)
	return err
}

// agentMachine shows guestpm the machine's runstate.
type agentMachine struct{ m Machine }

func (a agentMachine) RunState() string { return string(a.m.RunState()) }
func (a agentMachine) WaitSuspended(ctx context.Context) error {
	_, err := a.m.WaitRunState(ctx, vmm.StateSuspended)
	return err
}
func (a agentMachine) WakeOnSuspend(wake bool, why string) { a.m.WakeOnSuspend(wake, why) }

// Save writes the guest's state file at path durably, suspending the guest
// first with suspend (Suspend through its agent) if it is running. What
// would refuse the save is checked before the guest is touched; a save
// that suspended the guest and then failed wakes it again. It returns the
// save's timeline (nil if nothing was done). The machine is left saved:
// the caller ends it (Machine.Finish) once it has answered.
func Save(ctx context.Context, m Machine, suspend func(context.Context) error, path, version string, log zerolog.Logger) (*timeline.Timeline, error) {
	if path == "" {
		return nil, errors.New("save needs a state file path (pmvm save NAME --state FILE)")
	}
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("state file path %q must be absolute: pmvm runs in its own directory", path)
	}
	if err := m.CheckSaveable(path); err != nil {
		return nil, err
	}
	tl := timeline.New("save")
	tl.Mark("", StepSaveRequested, "")
	suspendedHere := false
	if m.RunState() == vmm.StateRunning {
		if err := suspend(ctx); err != nil {
			return tl, err
		}
		suspendedHere = true
		tl.Mark("", StepGuestInS3, "")
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
		return tl, errors.New(msg)
	}
	tl.Mark("", StepStateDurable, "")
	tl.LogSummary(log)
	return tl, nil
}

// RequestSave asks the pmvm serving the control socket at control to save
// its VM to statePath (Save, on its side) within timeout. It returns that
// pmvm's save timeline, as far as it got if the save failed. Once saved,
// that pmvm exits (WaitExited).
func RequestSave(control, statePath string, timeout time.Duration) (*timeline.Timeline, error) {
	resp, err := vmm.CallControl(control, vmm.ControlRequest{Command: "save", State: statePath, Timeout: timeout.Milliseconds()})
	if err != nil {
		return nil, err
	}
	if !resp.OK {
		return resp.Timeline, errors.New(resp.Error)
	}
	return resp.Timeline, nil
}

// PMVMExit is how the pmvm serving a control socket ended, as WaitExited
// saw it.
type PMVMExit int

const (
	PMVMRunning PMVMExit = iota // still serving its control socket
	PMVMExited                  // closed its control socket and let go of the VM
	PMVMDied                    // gone without closing its socket (killed?): nothing accepts on it
)

func (e PMVMExit) String() string {
	switch e {
	case PMVMExited:
		return "pmvm exited"
	case PMVMDied:
		return "pmvm died without closing its control socket (killed?)"
	}
	return "pmvm is still running"
}

// WaitExited waits up to wait for the pmvm serving control to exit after
// a save (until then it holds the VM's sockets and memory lock, which a
// resume needs) and records StepPMVMExited (of VM vm) in tl when it did.
// A pmvm is judged by whether anything still accepts on its socket, not
// by the socket file, which a killed pmvm leaves behind.
func WaitExited(control string, wait time.Duration, tl *timeline.Timeline, vm string) PMVMExit {
	var lastDial time.Time
	for deadline := time.Now().Add(wait); ; time.Sleep(5 * time.Millisecond) {
		// The file is looked at every turn, a connect tried every 50 ms.
		dial := time.Since(lastDial) >= 50*time.Millisecond
		if dial {
			lastDial = time.Now()
		}
		if e := pmvmExit(control, dial); e != PMVMRunning {
			if tl != nil {
				detail := ""
				if e == PMVMDied {
					detail = "died; its control socket was left behind"
				}
				tl.Mark(vm, StepPMVMExited, detail)
			}
			return e
		}
		if time.Now().After(deadline) {
			return PMVMRunning
		}
	}
}

// pmvmExit looks once at the pmvm serving control: its socket file gone
// is an exit; with dial, a connect that nothing accepts (ECONNREFUSED: no
// process listens on it any more) is a death.
func pmvmExit(control string, dial bool) PMVMExit {
	if _, err := os.Lstat(control); errors.Is(err, os.ErrNotExist) {
		return PMVMExited
	}
	if !dial {
		return PMVMRunning
	}
	c, err := net.DialTimeout("unix", control, time.Second)
	switch {
	case err == nil:
		c.Close()
	case errors.Is(err, syscall.ECONNREFUSED):
		return PMVMDied
	case errors.Is(err, os.ErrNotExist):
		return PMVMExited
	}
	return PMVMRunning
}

// RequestSuspend asks the pmvm serving control to suspend its guest
// (Suspend, on its side) within timeout and returns how long it took.
func RequestSuspend(control string, timeout time.Duration) (time.Duration, error) {
	return call(control, vmm.ControlRequest{Command: "suspend", Timeout: timeout.Milliseconds()})
}

// RequestWake asks the pmvm serving control to wake its suspended guest
// within timeout and returns how long it took.
func RequestWake(control string, timeout time.Duration) (time.Duration, error) {
	return call(control, vmm.ControlRequest{Command: "wakeup", Timeout: timeout.Milliseconds()})
}

func call(control string, req vmm.ControlRequest) (time.Duration, error) {
	resp, err := vmm.CallControl(control, req)
	if err != nil {
		return 0, err
	}
	if !resp.OK {
		return resp.Took, errors.New(resp.Error)
	}
	return resp.Took, nil
}
