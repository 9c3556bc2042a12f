package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/timeline"
)

// Resume is a resume under way: its state file and memory backings are
// checked, nothing is mapped yet.
type Resume struct {
	Path     string             // the state file
	Timeline *timeline.Timeline // "resume": process start -> vCPUs running
	in       *vmm.Incoming
}

// BeginResume checks the state file at path, the config and the memory
// backings before any guest memory is mapped (a refusal leaves the guest
// untouched); its timeline starts at started (the process start). The
// machine is then built by Open and woken by VM.Start. mem is Preflight's
// memory verdicts (nil: CheckIncoming probes the backings itself); the
// verdicts go on to Open.
func BeginResume(cfg *configs.VM, path string, started time.Time, mem *pmem.Report) (*Resume, error) {
	r := &Resume{Path: path, Timeline: timeline.New("resume")}
	r.Timeline.Add(started, "", StepProcessStart, "")
	in, err := vmm.CheckIncoming(cfg, path, mem)
	if err != nil {
		return nil, err
	}
	r.in = in
	r.Timeline.Mark("", StepChecked, "")
	return r, nil
}

// Options are how Open builds a machine.
type Options struct {
	Log     zerolog.Logger
	Console io.Writer       // the guest's COM1
	Agent   *vmm.SerialPort // the guest agent's line (COM2); nil: none
	Resume  *Resume         // from BeginResume; nil boots the kernel afresh
	// Memory is Preflight's verdicts on the backings, handed down so that
	// they are not probed again by path; nil: vmm.New probes them (a
	// resume carries CheckIncoming's).
	Memory *pmem.Report
}

// VM is a machine that Open built, booted or restored, and that Start
// runs.
type VM struct {
	M      *vmm.Machine
	resume *Resume

	done    chan struct{} // closed when Run has returned
	outcome vmm.Outcome
	err     error
}

// Open builds the machine cfg describes and either loads the kernel (a
// boot) or restores the state opts.Resume checked (a resume; its vCPUs
// wait for Start to wake them).
func Open(cfg *configs.VM, opts Options) (*VM, error) {
	mem := opts.Memory
	if opts.Resume != nil && mem == nil {
		mem = opts.Resume.in.Memory
	}
	m, err := vmm.New(cfg, vmm.Options{Log: opts.Log, Console: opts.Console, Agent: opts.Agent, Memory: mem})
	if err != nil {
		return nil, err
	}
	v := &VM{M: m, resume: opts.Resume}
	if r := opts.Resume; r == nil {
		if err = m.NewGeneration(); err == nil {
			err = m.Boot()
		}
	} else {
		r.Timeline.Mark("", StepMemoryMapped, "")
		if err = m.Restore(r.in); err == nil {
			r.Timeline.Mark("", StepStateLoaded, "")
		}
	}
	if err != nil {
		m.Close()
		return nil, err
	}
	return v, nil
}

// Start runs the machine's vCPUs until the guest powers off or resets, ctx
// ends or Stop; a resumed guest is woken at its waking vector. If the wake
// fails the machine is stopped and Start returns once it has.
func (v *VM) Start(ctx context.Context) error {
	v.done = make(chan struct{})
	go func() {
		defer close(v.done)
		v.outcome, v.err = v.M.Run(ctx)
	}()
	r := v.resume
	if r == nil {
		return nil
	}
	// Wake waits for the vCPU threads Run starts to park.
	if err := v.M.Wake("resume from " + r.Path); err != nil {
		v.M.Stop()
		<-v.done
		return fmt.Errorf("resume from %s: %w", r.Path, err)
	}
	r.Timeline.Mark("", StepVCPUsRunning, "")
	return nil
}

// Done is closed once the machine has stopped.
func (v *VM) Done() <-chan struct{} { return v.done }

// Wait waits until the machine has stopped and says why; a machine that
// failed is an error.
func (v *VM) Wait() (vmm.Outcome, error) {
	<-v.done
	if v.err != nil {
		return v.outcome, v.err
	}
	if v.outcome == vmm.OutcomeError {
		return v.outcome, errors.New("machine failed")
	}
	return v.outcome, nil
}

// Stop stops the machine as if the host pulled the plug (OutcomeStopped).
func (v *VM) Stop() { v.M.Stop() }

// Close releases the machine (its memory, VM and devices).
func (v *VM) Close() error { return v.M.Close() }
