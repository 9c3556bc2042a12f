package vmm

import (
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Timeline records the steps of a save or resume with their times, so the
// operator sees where the blackout goes and benchmarks have numbers.
type Timeline struct {
	Name  string `json:"name"`
	Steps []Step `json:"steps"`
}

// Step is one point of a timeline.
type Step struct {
	What string    `json:"what"`
	At   time.Time `json:"at"`
}

// NewTimeline starts a timeline whose first step is start.
func NewTimeline(name, first string, start time.Time) *Timeline {
	return &Timeline{Name: name, Steps: []Step{{What: first, At: start}}}
}

// Mark records a step now.
func (t *Timeline) Mark(what string) { t.Steps = append(t.Steps, Step{What: what, At: time.Now()}) }

// Total is the time from the first step to the last.
func (t *Timeline) Total() time.Duration {
	if len(t.Steps) < 2 {
		return 0
	}
	return t.Steps[len(t.Steps)-1].At.Sub(t.Steps[0].At)
}

// String prints one line per step: time since the start and since the step before.
func (t *Timeline) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s timeline:\n", t.Name)
	for i, s := range t.Steps {
		var delta time.Duration
		if i > 0 {
			delta = s.At.Sub(t.Steps[i-1].At)
		}
		fmt.Fprintf(&b, "  %10s  %+10s  %s\n", s.At.Sub(t.Steps[0].At).Round(time.Microsecond), delta.Round(time.Microsecond), s.What)
	}
	fmt.Fprintf(&b, "  total %s\n", t.Total().Round(time.Microsecond))
	return b.String()
}

// Log writes the timeline as one structured event.
func (t *Timeline) Log(log zerolog.Logger) {
	ev := log.Info().Str("timeline", t.Name).Dur("total", t.Total())
	for i, s := range t.Steps {
		ev = ev.Dur(fmt.Sprintf("%02d_%s", i, strings.ReplaceAll(s.What, " ", "_")), s.At.Sub(t.Steps[0].At))
	}
	ev.Msg("timeline")
}
