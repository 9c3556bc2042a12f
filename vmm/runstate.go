package vmm

// The runstate machine. A guest's life under pmvm, S3 included:
//
//	created -> running                      (Boot, then Run)
//	created -> suspended                    (Restore from a state file)
//	running -> suspended                    (the guest wrote SLP_TYP=S3|SLP_EN)
//	suspended -> waking -> running          (Wake: operator, RTC alarm, resume)
//	suspended -> saving -> saved            (SaveState; a failed write goes back to suspended)
//	any but stopped -> stopping -> stopped  (poweroff, reset, stop, failure)
//
// setStateLocked checks every move against it: an unexpected one is logged
// and counted (IllegalTransitions), never silently taken.
var runstateMoves = map[RunState][]RunState{
	StateCreated:   {StateRunning, StateSuspended, StateStopping},
	StateRunning:   {StateSuspended, StateStopping},
	StateSuspended: {StateWaking, StateSaving, StateStopping},
	StateWaking:    {StateRunning, StateStopping},
	StateSaving:    {StateSaved, StateSuspended, StateStopping},
	StateSaved:     {StateStopping},
	StateStopping:  {StateStopped},
	StateStopped:   nil,
}

// CanMove reports whether the runstate machine allows from -> to.
func CanMove(from, to RunState) bool {
	for _, s := range runstateMoves[from] {
		if s == to {
			return true
		}
	}
	return false
}
