package kexec

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/vmm/lifecycle"
	"github.com/pmvm/pmvm/vmm/timeline"
)

// A host update's timeline (a timeline.Timeline) spans the kexec: the
// update writes it to state_dir/update-timeline.json (fsync'd) just before
// the reboot, and the restore after boot reads it, appends its own steps
// and prints the whole story, with each VM's blackout.

// Steps of a host update's timeline. VM steps carry the VM's name; a VM's
// save records lifecycle's steps (lifecycle.StepSaveRequested, where its
// blackout starts, lifecycle.StepGuestInS3, lifecycle.StepStateDurable,
// lifecycle.StepPMVMExited) in the same timeline.
const (
	StepUpdateStarted  = "update started"
	StepPreSaveHook    = "pre-save hook done"
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

// NewTimeline starts a host update's timeline, whose ID is its start time.
func NewTimeline(start time.Time) *timeline.Timeline {
	host, _ := os.Hostname()
	return &timeline.Timeline{Version: timeline.Version, ID: start.UTC().Format("20060102T150405.000Z"), Host: host, FromKernel: kernelRelease()}
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

// Blackouts computes each VM's blackout in update timeline t, in the
// order VMs first appear.
func Blackouts(t *timeline.Timeline) []Blackout {
	var out []Blackout
	idx := map[string]int{}
	for _, e := range t.Sorted() {
		if e.VM == "" {
			continue
		}
		i, seen := idx[e.VM]
		switch e.What {
		case lifecycle.StepSaveRequested:
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

// LogTimeline writes update timeline t into log (host.log): one entry per
// step, then one per VM blackout, so the log holds the same story as the
// printout.
func LogTimeline(t *timeline.Timeline, log zerolog.Logger) {
	ev := t.Sorted()
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
	for _, b := range Blackouts(t) {
		l := log.Info().Str("timeline", t.ID).Str("vm", b.VM).Bool("running_again", b.Done)
		if b.Done && !b.None {
			l = l.Dur("blackout", b.Took)
		}
		l.Msg("blackout")
	}
}

// FormatTimeline writes update timeline t: one line per step with the
// time since the first step and since the step before, then each VM's
// blackout.
func FormatTimeline(w io.Writer, t *timeline.Timeline) {
	ev := t.Sorted()
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
	if bs := Blackouts(t); len(bs) > 0 {
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
