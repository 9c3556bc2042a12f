package kexec

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/state"
)

// The timeline of a host update spans the kexec: the update writes it to
// state_dir/update-timeline.json (fsync'd) just before the reboot, and the
// restore after boot reads it, appends its own steps and prints the whole
// story, with each VM's blackout.

// TimelineVersion is the format of the timeline file.
const TimelineVersion = 1

// Steps of a timeline. VM steps carry the VM's name.
const (
	StepUpdateStarted  = "update started"
	StepPreSaveHook    = "pre-save hook done"
	StepSaveRequested  = "save requested" // the VM's blackout starts here
	StepGuestInS3      = "guest in S3"
	StepStateDurable   = "state durable"
	StepPMVMExited     = "pmvm exited"
	StepSaveFailed     = "save failed"
	StepKernelLoaded   = "kernel loaded"
	StepPreKexecHook   = "pre-kexec hook done"
	StepKexec          = "kexec"
	StepKernelBooted   = "kernel booted"
	StepRestoreStarted = "pmvm run --incoming started"
	StepRunning        = "running" // the VM's blackout ends here
	StepStateMoved     = "state file moved aside"
	StepRestoreFailed  = "restore failed"
	StepPostRestore    = "post-restore hook done"
	StepWoken          = "woken (rollback)"
	StepNeverStopped   = "still running (its save failed before the guest was suspended)"
	StepRollback       = "rollback"
	StepRestoreDone    = "restore finished"
)

// Timeline is the update's record. It is safe for concurrent use.
type Timeline struct {
	Version    int     `json:"version"`
	ID         string  `json:"id"`
	Host       string  `json:"host,omitempty"`
	FromKernel string  `json:"from_kernel,omitempty"` // uname -r before the kexec
	Kernel     string  `json:"kernel,omitempty"`
	Initrd     string  `json:"initrd,omitempty"`
	Cmdline    string  `json:"cmdline,omitempty"`
	Events     []Event `json:"events"`

	mu sync.Mutex
}

// Event is one step, of a VM (VM set) or of the host.
type Event struct {
	At     time.Time `json:"at"`
	VM     string    `json:"vm,omitempty"`
	What   string    `json:"what"`
	Detail string    `json:"detail,omitempty"`
}

// NewTimeline starts a timeline whose ID is its start time.
func NewTimeline(start time.Time) *Timeline {
	host, _ := os.Hostname()
	return &Timeline{Version: TimelineVersion, ID: start.UTC().Format("20060102T150405.000Z"), Host: host, FromKernel: kernelRelease()}
}

// Add records a step at time at (a wall-clock time: the file crosses a
// reboot, so monotonic readings are dropped).
func (t *Timeline) Add(at time.Time, vm, what, detail string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.Events = append(t.Events, Event{At: at.Round(0), VM: vm, What: what, Detail: detail})
}

// Mark records a step now.
func (t *Timeline) Mark(vm, what, detail string) { t.Add(time.Now(), vm, what, detail) }

// sorted returns the events in time order (stable for equal times).
func (t *Timeline) sorted() []Event {
	t.mu.Lock()
	ev := append([]Event(nil), t.Events...)
	t.mu.Unlock()
	sort.SliceStable(ev, func(i, j int) bool { return ev[i].At.Before(ev[j].At) })
	return ev
}

// Last returns the time of the last host (VM "") or VM step what, if any.
func (t *Timeline) Last(vm, what string) (time.Time, bool) {
	var at time.Time
	found := false
	for _, e := range t.sorted() {
		if e.VM == vm && e.What == what {
			at, found = e.At, true
		}
	}
	return at, found
}

// Blackout is how long a VM was not running: from its save request to
// its first "running" after it.
type Blackout struct {
	VM       string
	From, To time.Time
	Took     time.Duration
	Done     bool // false: the VM is not running again (yet)
	None     bool // the VM never stopped (its save failed before suspending it)
}

// Blackouts computes each VM's blackout, in the order VMs first appear.
func (t *Timeline) Blackouts() []Blackout {
	var out []Blackout
	idx := map[string]int{}
	for _, e := range t.sorted() {
		if e.VM == "" {
			continue
		}
		i, seen := idx[e.VM]
		switch e.What {
		case StepSaveRequested:
			if !seen {
				idx[e.VM] = len(out)
				out = append(out, Blackout{VM: e.VM, From: e.At})
			}
		case StepNeverStopped:
			if seen && !out[i].Done {
				out[i].To, out[i].Done, out[i].None = e.At, true, true
			}
		case StepRunning:
			if seen && !out[i].Done {
				out[i].To, out[i].Done = e.At, true
				out[i].Took = e.At.Sub(out[i].From)
			}
		}
	}
	return out
}

// Log writes the timeline into log (host.log): one entry per step, then
// one per VM blackout, so the log holds the same story as the printout.
func (t *Timeline) Log(log zerolog.Logger) {
	ev := t.sorted()
	if len(ev) == 0 {
		return
	}
	for _, e := range ev {
		l := log.Info().Str("timeline", t.ID).Str("at", e.At.Format(time.RFC3339Nano)).Dur("since_start", e.At.Sub(ev[0].At)).Str("step", e.What)
		if e.VM != "" {
			l = l.Str("vm", e.VM)
		}
		if e.Detail != "" {
			l = l.Str("detail", e.Detail)
		}
		l.Msg("timeline step")
	}
	for _, b := range t.Blackouts() {
		l := log.Info().Str("timeline", t.ID).Str("vm", b.VM).Bool("running_again", b.Done)
		if b.Done && !b.None {
			l = l.Dur("blackout", b.Took)
		}
		l.Msg("blackout")
	}
}

// Format writes the timeline: one line per step with the time since the
// first step and since the step before, then each VM's blackout.
func (t *Timeline) Format(w io.Writer) {
	ev := t.sorted()
	fmt.Fprintf(w, "host update timeline %s", t.ID)
	if t.FromKernel != "" || t.Kernel != "" {
		fmt.Fprintf(w, " (%s -> %s)", orDash(t.FromKernel), orDash(t.Kernel))
	}
	fmt.Fprintln(w)
	if len(ev) == 0 {
		fmt.Fprintln(w, "  (no steps)")
		return
	}
	start := ev[0].At
	width := 0
	for _, e := range ev {
		if len(e.VM) > width {
			width = len(e.VM)
		}
	}
	for i, e := range ev {
		var delta time.Duration
		if i > 0 {
			delta = e.At.Sub(ev[i-1].At)
		}
		vm := e.VM
		if vm == "" {
			vm = "-"
		}
		line := fmt.Sprintf("  %s  %11s  %+11s  %-*s  %s", e.At.Local().Format("15:04:05.000"),
			fmtDur(e.At.Sub(start)), fmtDur(delta), width, vm, e.What)
		if e.Detail != "" {
			line += " (" + e.Detail + ")"
		}
		fmt.Fprintln(w, line)
	}
	if bs := t.Blackouts(); len(bs) > 0 {
		fmt.Fprintln(w, "blackout (save requested -> running again):")
		for _, b := range bs {
			if b.None {
				fmt.Fprintf(w, "  %-*s  none (never suspended)\n", width, b.VM)
			} else if b.Done {
				fmt.Fprintf(w, "  %-*s  %s\n", width, b.VM, fmtDur(b.Took))
			} else {
				fmt.Fprintf(w, "  %-*s  not running again yet (since %s)\n", width, b.VM, b.From.Local().Format("15:04:05.000"))
			}
		}
	}
}

func fmtDur(d time.Duration) string {
	return d.Round(time.Millisecond).String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteTimeline writes t to path atomically and durably: a temporary file,
// fsync, rename, fsync of the directory.
func WriteTimeline(path string, t *Timeline) error {
	t.mu.Lock()
	b, err := json.MarshalIndent(t, "", "  ")
	t.mu.Unlock()
	if err != nil {
		return err
	}
	return state.WriteFileDurable(path, append(b, '\n'))
}

// ReadTimeline reads a timeline file.
func ReadTimeline(path string) (*Timeline, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var t Timeline
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("timeline %s: %w", path, err)
	}
	if t.Version != TimelineVersion {
		return nil, fmt.Errorf("timeline %s: format version %d, this pmvm reads %d", path, t.Version, TimelineVersion)
	}
	return &t, nil
}

// BootTime is when this kernel started, from /proc/uptime (centisecond
// resolution) against the wall clock.
func BootTime() (time.Time, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return time.Time{}, err
	}
	return bootTimeFrom(string(b), time.Now())
}

func bootTimeFrom(uptime string, now time.Time) (time.Time, error) {
	f := strings.Fields(uptime)
	if len(f) == 0 {
		return time.Time{}, errors.New("empty /proc/uptime")
	}
	secs, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("/proc/uptime: %w", err)
	}
	return now.Add(-time.Duration(secs * float64(time.Second))).Round(0), nil
}

// kernelRelease is `uname -r`.
func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
