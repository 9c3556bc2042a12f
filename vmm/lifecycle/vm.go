package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/timeline"
)

// Resume is a resume under way: its state file and memory backings are
// checked, nothing is mapped yet.
type Resume struct {
	Path     string             // the state file
	Timeline *timeline.Timeline // "resume": process start -> vCPUs running
	SpentTo  string             // where Start moved the state file aside
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
	if mem != nil {
		for _, b := range mem.Blocks {
			if b.Missing {
				return nil, missingBacking{fmt.Errorf("%s cannot resume VM %q: memory block %q: %s does not exist, so the guest's memory is not there (create = true does not apply to a resume); "+
					"nothing was started and guest memory was not touched: fix backing in the config, or bring the memory back", path, cfg.Name, b.Block, b.Backing)}
			}
		}
	}
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
	// KeepState leaves a resume's state file in place instead of spending
	// it before the wake. Only for benchmarks that resume one state file
	// again and again, over a guest that leaves its RAM as it found it.
	KeepState bool
}

// VM is a machine that Open built, booted or restored, and that Start
// runs.
type VM struct {
	M      *vmm.Machine
	m      runner // M; tests use fakes
	resume *Resume
	// keepState leaves a resume's state file in place (Options.KeepState).
	keepState bool

	done    chan struct{} // closed when Run has returned
	outcome vmm.Outcome
	err     error
}

// runner is what Start needs of a machine; *vmm.Machine is one.
type runner interface {
	Run(ctx context.Context) (vmm.Outcome, error)
	Wake(why string) error
	Stop()
	SpendState() error
	UnspendState() error
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
	v := &VM{M: m, m: m, resume: opts.Resume, keepState: opts.KeepState}
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
// ends or Stop; a resumed guest is woken at its waking vector.
//
// A resume spends its state file first: the file is moved aside durably
// (state.MoveAsideResumed) before any vCPU runs, so that a crash at any
// moment after the wake cannot leave a state that could be resumed over
// the guest's newer memory. If it cannot be moved aside, the guest is not
// woken (its memory is not touched) and the file stays for a retry. If
// the wake fails, the guest did not run: the state file is put back, and
// the machine is stopped before Start returns.
func (v *VM) Start(ctx context.Context) error {
	v.done = make(chan struct{})
	r := v.resume
	if r != nil && !v.keepState {
		to, err := spend(r.Path)
		if err != nil {
			v.err, v.outcome = err, vmm.OutcomeError
			close(v.done)
			return fmt.Errorf("resume from %s: %w", r.Path, err)
		}
		r.SpentTo = to
	}
	go func() {
		defer close(v.done)
		v.outcome, v.err = v.m.Run(ctx)
	}()
	if r == nil {
		return nil
	}
	// The point of no return, last before the wake: the state is spent on
	// the memory (its generation advances). A pmvm killed before this
	// leaves the state resumable (moved aside, if it got that far).
	if err := v.m.SpendState(); err != nil {
		v.m.Stop()
		<-v.done
		if r.SpentTo != "" {
			err = fmt.Errorf("%w; %s", err, unspend(r.SpentTo, r.Path))
		}
		return fmt.Errorf("resume from %s: %w", r.Path, err)
	}
	// Wake waits for the vCPU threads Run starts to park.
	if err := v.m.Wake("resume from " + r.Path); err != nil {
		v.m.Stop()
		<-v.done
		if uerr := v.m.UnspendState(); uerr != nil {
			err = fmt.Errorf("%w; putting the memory's generation back failed too (%v)", err, uerr)
		}
		if r.SpentTo != "" {
			err = fmt.Errorf("%w; %s", err, unspend(r.SpentTo, r.Path))
		}
		return fmt.Errorf("resume from %s: %w", r.Path, err)
	}
	r.Timeline.Mark("", StepVCPUsRunning, "")
	return nil
}

// spend moves the state file at path aside durably, so that it can never
// be resumed again, and returns its new name. A move that is not durable
// is undone: a crash could bring the old name back.
func spend(path string) (string, error) {
	to, err := state.MoveAsideResumed(path)
	if err == nil {
		return to, nil
	}
	if to != "" && to != path {
		if rerr := os.Rename(to, path); rerr != nil {
			return "", fmt.Errorf("%w, and moving it back failed too (%v): the guest was not woken and guest memory was not touched; move %s back to %s by hand to resume it", err, rerr, to, path)
		}
	}
	return "", fmt.Errorf("%w: the guest was not woken (a resumed guest's state file must be moved aside first, so that it is never resumed twice) and guest memory was not touched; "+
		"%s is left in place: fix the cause (is its directory writable, the file name short enough?) and resume again", err, path)
}

// unspend puts back the state file spent for a wake that failed (the
// guest did not run, its memory is as the state file found it) and says
// what it did.
func unspend(spent, path string) string {
	if err := os.Rename(spent, path); err != nil {
		return fmt.Sprintf("the guest did not run, but its state file, moved aside to %s before the wake, could not be put back (%v): move it back to %s by hand to retry", spent, err, path)
	}
	if err := state.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Sprintf("the guest did not run; its state file was put back at %s (not yet durably: %v)", path, err)
	}
	return fmt.Sprintf("the guest did not run; its state file was put back at %s for a retry", path)
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
func (v *VM) Stop() { v.m.Stop() }

// Close releases the machine (its memory, VM and devices).
func (v *VM) Close() error { return v.M.Close() }
