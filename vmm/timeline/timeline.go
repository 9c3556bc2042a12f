// Package timeline records the steps of a VM's lifecycle (a save, a
// resume) and of a host update with their times, so the operator sees
// where the blackout goes and benchmarks have numbers. One type serves a
// single pmvm process (its save or resume, sent over the control socket)
// and a whole host update (written to a file that crosses the kexec). The
// step names belong to the code that performs the steps: vmm/lifecycle
// for a VM's, kexec for a host update's.
package timeline

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/state"
)

// Version is the format of a timeline file.
const Version = 1

// Timeline is a record of steps. It is safe for concurrent use.
type Timeline struct {
	Version int    `json:"version,omitempty"` // set in files (Version)
	ID      string `json:"id,omitempty"`      // a host update's: its start time
	Name    string `json:"name,omitempty"`    // what it times ("save", "resume")
	// A host update's: where and from which kernel into which.
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

// New starts an empty timeline called name.
func New(name string) *Timeline { return &Timeline{Name: name} }

// Add records a step at time at. Monotonic clock readings are dropped:
// a timeline may cross a reboot, where only the wall clock goes on.
func (t *Timeline) Add(at time.Time, vm, what, detail string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.Events = append(t.Events, Event{At: at.Round(0), VM: vm, What: what, Detail: detail})
}

// Mark records a step now.
func (t *Timeline) Mark(vm, what, detail string) { t.Add(time.Now(), vm, what, detail) }

// Sorted returns the events in time order (stable for equal times).
func (t *Timeline) Sorted() []Event {
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
	for _, e := range t.Sorted() {
		if e.VM == vm && e.What == what {
			at, found = e.At, true
		}
	}
	return at, found
}

// Between is the time from the first step from to the last step to (of
// any VM), and whether both were recorded.
func (t *Timeline) Between(from, to string) (time.Duration, bool) {
	var a, b time.Time
	var okA, okB bool
	for _, e := range t.Sorted() {
		if e.What == from && !okA {
			a, okA = e.At, true
		}
		if e.What == to {
			b, okB = e.At, true
		}
	}
	return b.Sub(a), okA && okB
}

// Total is the time from the first step to the last.
func (t *Timeline) Total() time.Duration {
	ev := t.Sorted()
	if len(ev) < 2 {
		return 0
	}
	return ev[len(ev)-1].At.Sub(ev[0].At)
}

// String prints one line per step: time since the start and since the
// step before (a single process's timeline: pmvm save, a resume).
func (t *Timeline) String() string {
	ev := t.Sorted()
	var b strings.Builder
	fmt.Fprintf(&b, "%s timeline:\n", t.Name)
	for i, s := range ev {
		var delta time.Duration
		if i > 0 {
			delta = s.At.Sub(ev[i-1].At)
		}
		fmt.Fprintf(&b, "  %10s  %+10s  %s\n", s.At.Sub(ev[0].At).Round(time.Microsecond), delta.Round(time.Microsecond), s.What)
	}
	fmt.Fprintf(&b, "  total %s\n", t.Total().Round(time.Microsecond))
	return b.String()
}

// LogSummary writes the timeline as one structured event, each step as
// the time since the first.
func (t *Timeline) LogSummary(log zerolog.Logger) {
	ev := t.Sorted()
	l := log.Info().Str("timeline", t.Name).Dur("total", t.Total())
	for i, s := range ev {
		l = l.Dur(fmt.Sprintf("%02d_%s", i, strings.ReplaceAll(s.What, " ", "_")), s.At.Sub(ev[0].At))
	}
	l.Msg("timeline")
}

// UnmarshalJSON reads a timeline, also as a pmvm from before the one
// timeline type sent it over the control socket: {"name", "steps"}.
func (t *Timeline) UnmarshalJSON(b []byte) error {
	type fields Timeline // without this method
	aux := struct {
		*fields
		Steps []Event `json:"steps"`
	}{fields: (*fields)(t)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	if len(t.Events) == 0 {
		t.Events = aux.Steps
	}
	return nil
}

// Write writes t to path atomically and durably: a temporary file,
// fsync, rename, fsync of the directory.
func Write(path string, t *Timeline) error {
	t.mu.Lock()
	b, err := json.MarshalIndent(t, "", "  ")
	t.mu.Unlock()
	if err != nil {
		return err
	}
	return state.WriteFileDurable(path, append(b, '\n'))
}

// Read reads a timeline file written by Write.
func Read(path string) (*Timeline, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var t Timeline
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("timeline %s: %w", path, err)
	}
	if t.Version != Version {
		return nil, fmt.Errorf("timeline %s: format version %d, this pmvm reads %d", path, t.Version, Version)
	}
	return &t, nil
}
