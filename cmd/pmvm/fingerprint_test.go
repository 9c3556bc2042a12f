package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm"
)

// TestResumeRefusesMemoryThatDidNotSurvive proves a resume checks the
// memory's contents, not only its identity: after a cold reboot instead of
// a kexec the backing is the same (same file, same namespace) but its
// contents are gone, scrubbed to zeros or reused. Emulated here by
// rewriting the backing in place: the resume is refused saying the memory
// did not survive, nothing runs, the memory is left as it is, and the
// state file stays (not spent).
func TestResumeRefusesMemoryThatDidNotSurvive(t *testing.T) {
	for _, how := range []string{"zeroed", "random"} {
		t.Run(how, func(t *testing.T) {
			useGenerationDir(t)
			dir, cfg, backing, statePath := savedGuest(t)
			st, err := os.Stat(backing)
			require.NoError(t, err)
			junk := make([]byte, st.Size())
			if how == "random" {
				_, err = rand.Read(junk)
				require.NoError(t, err)
			}
			f, err := os.OpenFile(backing, os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.WriteAt(junk, 0) // in place: the same inode, the same identity
			require.NoError(t, err)
			require.NoError(t, f.Close())
			before := fileSum(t, backing)

			var out, errb bytes.Buffer
			done := make(chan int, 1)
			go func() {
				done <- runMain([]string{"run", cfg, "--incoming", statePath, "--log-level", "error"}, &out, &errb)
			}()
			var code int
			select {
			case code = <-done:
			case <-time.After(20 * time.Second):
				vmm.CallControl(filepath.Join(dir, "control.sock"), vmm.ControlRequest{Command: "stop", Timeout: 2000})
				<-done
				t.Fatalf("the resume over scrubbed memory ran the guest; stderr:\n%s", errb.String())
			}
			assert.Equal(t, exitFailure, code)
			assert.Contains(t, errb.String(), "the memory did not survive")
			assert.Contains(t, errb.String(), "was this a cold reboot")
			assert.Contains(t, errb.String(), "the guest's memory is untouched")
			assert.Empty(t, out.String(), "the guest did not run")
			assert.Equal(t, before, fileSum(t, backing), "guest memory untouched by the refusal")
			assert.FileExists(t, statePath, "the state file is not moved aside")
		})
	}
}

// TestStateWithoutNewSectionsStillResumes proves a state file from before
// memory generations and fingerprints (the same save without those two
// sections) still resumes: there is nothing to check, so nothing refuses.
func TestStateWithoutNewSectionsStillResumes(t *testing.T) {
	useGenerationDir(t)
	_, cfg, _, statePath := savedGuest(t)
	f, err := state.ReadFile(statePath)
	require.NoError(t, err)
	var kept []state.Section
	var dropped []string
	for _, s := range f.Sections {
		if s.Name == state.GenerationSection || s.Name == "memory-fingerprint" {
			dropped = append(dropped, s.Name)
			continue
		}
		kept = append(kept, s)
	}
	require.ElementsMatch(t, []string{state.GenerationSection, "memory-fingerprint"}, dropped, "a save today writes both")
	f.Sections = kept
	require.NoError(t, state.WriteFile(statePath, f))

	var out, errb bytes.Buffer
	require.Equal(t, exitPowerOff, runMain([]string{"run", cfg, "--incoming", statePath, "--log-level", "error"}, &out, &errb), errb.String())
	assert.Equal(t, "WM\x80", out.String(), "the guest resumed")
}
