// Package statetest helps tests that save and resume guests: their memory
// generation records (state.GenerationDir) go to a temporary directory
// instead of the host's /var/lib/pmvm/generations.
package statetest

import (
	"fmt"
	"os"

	"github.com/pmvm/pmvm/state"
)

// Runner is what a TestMain runs (*testing.M is one).
type Runner interface{ Run() int }

// WithTempGenerationDir wraps m so that its tests keep their generation
// records in a temporary directory, removed when they end.
func WithTempGenerationDir(m Runner) Runner { return tempGenerations{m} }

type tempGenerations struct{ m Runner }

func (w tempGenerations) Run() int {
	dir, err := os.MkdirTemp("", "pmvm-generations-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "generation dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The environment too, for the pmvm processes tests start.
	state.GenerationDir = dir
	os.Setenv(state.GenerationDirEnv, dir)
	return w.m.Run()
}
