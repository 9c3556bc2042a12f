package vmm

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestRunstateMachine is the pure model of a guest's life with S3: every
// path pmvm takes is allowed, and the moves that would mean a bug are not
// (running a guest that is being saved, waking a saved one, saving a
// running one, leaving stopped).
func TestRunstateMachine(t *testing.T) {
	paths := map[string][]RunState{
		"boot, poweroff":                   {StateCreated, StateRunning, StateStopping, StateStopped},
		"S3 and wake, twice":               {StateCreated, StateRunning, StateSuspended, StateWaking, StateRunning, StateSuspended, StateWaking, StateRunning, StateStopping, StateStopped},
		"suspend, save, exit":              {StateCreated, StateRunning, StateSuspended, StateSaving, StateSaved, StateStopping, StateStopped},
		"save fails, wake":                 {StateCreated, StateRunning, StateSuspended, StateSaving, StateSuspended, StateWaking, StateRunning},
		"resume from a state file":         {StateCreated, StateSuspended, StateWaking, StateRunning},
		"stopped while suspended":          {StateSuspended, StateStopping, StateStopped},
		"wake fails":                       {StateSuspended, StateWaking, StateStopping},
		"refused before running":           {StateCreated, StateStopping},
		"stopped while saving (kill path)": {StateSaving, StateStopping},
	}
	for name, p := range paths {
		for i := 1; i < len(p); i++ {
			assert.True(t, CanMove(p[i-1], p[i]), "%s: %s -> %s", name, p[i-1], p[i])
		}
	}
	for _, bad := range [][2]RunState{
		{StateRunning, StateSaving},    // only a suspended guest is saved
		{StateRunning, StateWaking},    // nothing to wake
		{StateSuspended, StateRunning}, // a wake goes through waking (vCPU reset)
		{StateSaving, StateRunning},
		{StateSaved, StateRunning}, // its memory is handed to the next pmvm
		{StateSaved, StateWaking},
		{StateSaved, StateSuspended},
		{StateStopped, StateRunning},
		{StateStopping, StateRunning},
		{StateCreated, StateSaving},
		{StateRunning, StateRunning},
	} {
		assert.False(t, CanMove(bad[0], bad[1]), "%s -> %s must not be allowed", bad[0], bad[1])
	}
	for from := range runstateMoves {
		for _, to := range runstateMoves[from] {
			_, known := runstateMoves[to]
			assert.True(t, known, "%s -> %s: %s has no entry", from, to, to)
		}
	}
}
