package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/qa/labrun"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/lifecycle"
)

// Version is what the benchmark's state files say wrote them.
const Version = "bench"

// stepTimeout bounds every wait on the tiny guest (it needs milliseconds).
const stepTimeout = 20 * time.Second

// console collects the guest's COM1 output and notes when its first byte
// arrived. The UART calls Write on the vCPU thread during the guest's
// port write, so first is when the guest executed that instruction.
type console struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	first   time.Time
	arrived chan struct{} // closed at the first byte
}

func newConsole() *console { return &console{arrived: make(chan struct{})} }

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first.IsZero() && len(p) > 0 {
		c.first = time.Now()
		close(c.arrived)
	}
	return c.buf.Write(p)
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func (c *console) firstByte() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first
}

// Guest is a pmvm machine running the tiny guest, built and run by
// vmm/lifecycle as pmvm run builds and runs it.
type Guest struct {
	vm      *lifecycle.VM
	M       *vmm.Machine
	console *console
	cancel  context.CancelFunc
}

// open builds the machine cfg describes (booted, or restored by resume)
// with con as its console, and starts its vCPUs.
func open(cfg *configs.VM, resume *lifecycle.Resume, con *console) (*Guest, error) {
	// KeepState: the benchmarks resume one state file again and again.
	vm, err := lifecycle.Open(cfg, lifecycle.Options{Log: zerolog.Nop(), Console: con, Resume: resume, KeepState: true})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Guest{vm: vm, M: vm.M, console: con, cancel: cancel}
	if err := vm.Start(ctx); err != nil {
		return nil, errors.Join(err, g.wait())
	}
	return g, nil
}

// BootToS3 builds the machine cfg describes, boots the suspending kernel
// (cfg.Boot.Kernel) and waits until the guest has entered S3.
func BootToS3(cfg *configs.VM) (*Guest, error) {
	con := newConsole()
	g, err := open(cfg, nil, con)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if _, err := g.M.WaitRunState(ctx, vmm.StateSuspended); err != nil {
		return nil, errors.Join(fmt.Errorf("the tiny guest did not suspend: %w", err), g.Close())
	}
	if out := con.String(); out != SuspendOutput {
		return nil, errors.Join(fmt.Errorf("the tiny guest printed %q before S3, want %q", out, SuspendOutput), g.Close())
	}
	return g, nil
}

// Save saves the suspended guest to path with lifecycle.Save, as pmvm
// save does, and returns the timed part of BenchmarkSave: from the save
// request to the state file durable (its timeline's first step to
// lifecycle.StepStateDurable).
func (g *Guest) Save(path string) (time.Duration, error) {
	noAgent := func(context.Context) error {
		return errors.New("the tiny guest has no agent: it suspends itself before a save")
	}
	tl, err := lifecycle.Save(context.Background(), g.M, noAgent, path, Version, zerolog.Nop())
	if err != nil {
		return 0, err
	}
	d, ok := tl.Between(lifecycle.StepSaveRequested, lifecycle.StepStateDurable)
	if !ok {
		return 0, fmt.Errorf("the save timeline lacks %q or %q:\n%s", lifecycle.StepSaveRequested, lifecycle.StepStateDurable, tl)
	}
	return d, nil
}

// Finish stops a saved guest (the process exit of `pmvm save`).
func (g *Guest) Finish() error {
	g.M.Finish()
	return g.wait()
}

// Close stops the guest however it is and releases the machine.
func (g *Guest) Close() error {
	g.vm.Stop()
	g.cancel()
	return g.wait()
}

// wait waits for the machine to stop and releases it. Its outcome is the
// guest's business; only a failure is an error.
func (g *Guest) wait() error {
	defer g.cancel()
	var err error
	select {
	case <-g.vm.Done():
		if o, werr := g.vm.Wait(); werr != nil {
			err = fmt.Errorf("machine failed (outcome %s): %v", o, werr)
		}
	case <-time.After(stepTimeout):
		err = fmt.Errorf("machine did not stop within %s", stepTimeout)
	}
	return errors.Join(err, g.vm.Close())
}

// SaveOnce boots the tiny guest to S3, saves it to statePath and stops it:
// what `pmvm run` + `pmvm save` leave behind for a resume.
func SaveOnce(cfg *configs.VM, statePath string) error {
	g, err := BootToS3(cfg)
	if err != nil {
		return err
	}
	if _, err := g.Save(statePath); err != nil {
		return errors.Join(err, g.Close())
	}
	return g.Finish()
}

// ResumeTimes splits one resume into its steps.
type ResumeTimes struct {
	Check   time.Duration // lifecycle.BeginResume: state file read and checked, backing probed
	New     time.Duration // lifecycle.Open up to the restore: backing mapped, VM, irqchip, vCPUs, devices
	Restore time.Duration // the restore: device records, clock
	Wake    time.Duration // VM.Start: Run started, Wake, until the guest's first port write at its waking vector
}

// Total is the whole resume.
func (t ResumeTimes) Total() time.Duration { return t.Check + t.New + t.Restore + t.Wake }

// Resume resumes the guest saved in statePath into a new machine, as pmvm
// run --incoming does (lifecycle.BeginResume, Open, Start), and times it
// from its steps up to the guest's first instruction output at its
// waking vector; then (untimed) it lets the resume code finish, checks
// that it saw its marker and WAK_STS, and releases the machine.
func Resume(cfg *configs.VM, statePath string) (ResumeTimes, error) {
	var t ResumeTimes
	con := newConsole()
	r, err := lifecycle.BeginResume(cfg, statePath, time.Now(), nil)
	if err != nil {
		return t, err
	}
	g, err := open(cfg, r, con)
	if err != nil {
		return t, err
	}
	select {
	case <-con.arrived:
	case <-time.After(stepTimeout):
		return t, errors.Join(fmt.Errorf("the resumed guest wrote nothing within %s", stepTimeout), g.Close())
	}
	step := map[string]time.Time{}
	for _, e := range r.Timeline.Sorted() {
		step[e.What] = e.At
	}
	for _, s := range []string{lifecycle.StepProcessStart, lifecycle.StepChecked, lifecycle.StepMemoryMapped, lifecycle.StepStateLoaded} {
		if step[s].IsZero() {
			return t, errors.Join(fmt.Errorf("the resume timeline lacks %q:\n%s", s, r.Timeline), g.Close())
		}
	}
	t = ResumeTimes{
		Check:   step[lifecycle.StepChecked].Sub(step[lifecycle.StepProcessStart]),
		New:     step[lifecycle.StepMemoryMapped].Sub(step[lifecycle.StepChecked]),
		Restore: step[lifecycle.StepStateLoaded].Sub(step[lifecycle.StepMemoryMapped]),
		Wake:    con.firstByte().Round(0).Sub(step[lifecycle.StepStateLoaded]),
	}

	// Untimed: the resume code powers off once it has printed.
	select {
	case <-g.vm.Done():
	case <-time.After(stepTimeout):
		return t, errors.Join(fmt.Errorf("the resumed guest did not power off; it printed %q", con.String()), g.Close())
	}
	if err := g.wait(); err != nil {
		return t, err
	}
	if out := con.String(); out != ResumeOutput {
		return t, fmt.Errorf("the resumed guest printed %q, want %q (resumed at the vector, its RAM intact, WAK_STS set)", out, ResumeOutput)
	}
	return t, rewindGenerations(statePath)
}

// rewindGenerations sets each backing's generation back to the one the
// state file was saved at (the resume advanced it, spending the file), so
// that a benchmark can resume the same saved tiny guest again: its resume
// code only reads memory, prints and powers off.
func rewindGenerations(statePath string) error {
	f, err := state.ReadFile(statePath)
	if err != nil {
		return err
	}
	sec, ok := f.Section(state.GenerationSection)
	if !ok {
		return nil
	}
	var gens []state.Generation
	if err := sec.DecodeJSON(&gens); err != nil {
		return err
	}
	for _, g := range gens {
		if err := state.SetGeneration(g.Key, g.Generation); err != nil {
			return err
		}
	}
	return nil
}

// PutBackResumed undoes pmvm moving a resumed state file aside, so that a
// benchmark can resume the same saved tiny guest again: its resume code
// only reads memory, prints and powers off, leaving the memory as saved.
func PutBackResumed(statePath string) error {
	moved := state.LastResumed(statePath)
	if moved == "" {
		return fmt.Errorf("pmvm did not move %s aside after resuming it", statePath)
	}
	if err := os.Rename(moved, statePath); err != nil {
		return err
	}
	return rewindGenerations(statePath)
}

// ResumeProcess resumes through the real binary: `pmvm run CONFIG
// --incoming STATE` as a new process, timed from exec until the guest's
// first byte reaches pmvm's stdout (the console). Untimed, it then waits
// for the guest to power off and pmvm to exit 0 with ResumeOutput printed.
func ResumeProcess(bin, configPath, statePath string) (time.Duration, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "run", configPath, "--incoming", statePath, "--log-level", "error")
	cmd.Stdout = w
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		w.Close()
		return 0, err
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	first := make([]byte, 1)
	r.SetReadDeadline(time.Now().Add(stepTimeout)) // a pipe from os.Pipe supports deadlines
	n, err := r.Read(first)
	d := time.Since(t0)
	if err != nil || n != 1 {
		_ = cmd.Process.Kill()
		<-exited
		return d, fmt.Errorf("pmvm run --incoming printed nothing (%v): %s", err, stderr.String())
	}
	rest, _ := io.ReadAll(r)
	select {
	case err = <-exited:
	case <-time.After(stepTimeout):
		_ = cmd.Process.Kill()
		<-exited
		return d, fmt.Errorf("pmvm run --incoming did not exit: %s", stderr.String())
	}
	if err != nil {
		return d, fmt.Errorf("pmvm run --incoming: %v: %s", err, stderr.String())
	}
	if out := string(first) + string(rest); out != ResumeOutput {
		return d, fmt.Errorf("the resumed guest printed %q, want %q", out, ResumeOutput)
	}
	return d, nil
}

// BuildPMVM builds the pmvm binary into dir (as `make build` does) and
// returns its path.
func BuildPMVM(dir string) (string, error) {
	if p := os.Getenv(labrun.PMVMEnv); p != "" { // in a lab host: labrun built it
		return p, nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is needed to build pmvm: %w", err)
	}
	bin := filepath.Join(dir, "pmvm")
	cmd := exec.Command(goBin, "build", "-o", bin, "github.com/pmvm/pmvm/cmd/pmvm")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/pmvm: %v\n%s", err, out)
	}
	return bin, nil
}
