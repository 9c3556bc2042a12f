package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm"
)

// useGenerationDir keeps a test's generation records in its own directory.
func useGenerationDir(t *testing.T) string {
	t.Helper()
	old := state.GenerationDir
	state.GenerationDir = filepath.Join(t.TempDir(), "generations")
	t.Cleanup(func() { state.GenerationDir = old })
	return state.GenerationDir
}

// TestResumedStateIsSpentWhateverItsName proves a state file is spent by
// the resume of its guest, not by its name: after a resume through a
// symlink (which moves the link aside), the link's target, a hard link and
// a copy of the same state are each refused as already resumed, with guest
// memory untouched, because the memory's generation has moved on. The next
// save of the resumed guest resumes again.
func TestResumedStateIsSpentWhateverItsName(t *testing.T) {
	genDir := useGenerationDir(t)
	dir, cfg, backing, statePath := savedGuest(t)
	good, err := os.ReadFile(statePath)
	require.NoError(t, err)
	copyPath := filepath.Join(dir, "copy.state")
	require.NoError(t, os.WriteFile(copyPath, good, 0o600))
	linkPath := filepath.Join(dir, "link.state")
	require.NoError(t, os.Link(statePath, linkPath))
	symPath := filepath.Join(dir, "sym.state")
	require.NoError(t, os.Symlink(statePath, symPath))

	run := func(path string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runMain([]string{"run", cfg, "--incoming", path, "--log-level", "error"}, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errs := run(symPath)
	require.Equal(t, exitPowerOff, code, errs)
	assert.Equal(t, "WM\x80", out, "the guest resumed")
	assert.NoFileExists(t, symPath, "the link was moved aside")
	require.FileExists(t, statePath, "its target was not")
	ents, err := os.ReadDir(genDir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "one record for the one backing")

	before := fileSum(t, backing)
	for _, p := range []string{statePath, linkPath, copyPath} {
		code, out, errs := run(p)
		assert.Equal(t, exitFailure, code, p)
		assert.Empty(t, out, "%s: the guest did not run", p)
		assert.Contains(t, errs, p+" cannot resume VM \"tiny\": it was already resumed", p)
		assert.Contains(t, errs, "the guest's memory is untouched", p)
		assert.Equal(t, before, fileSum(t, backing), "%s: guest memory untouched by the refusal", p)
	}
}

// TestColdBootSpendsSavedStates proves a cold boot over memory a guest was
// saved in spends that save: the boot overwrote the memory, so resuming
// the old state afterwards is refused as already resumed, memory untouched.
// (Here no host config names a state_dir, so the boot itself is allowed.)
func TestColdBootSpendsSavedStates(t *testing.T) {
	useGenerationDir(t)
	dir, cfg, backing, statePath := savedGuest(t)

	ctl, exited := bootToS3(t, dir, cfg)
	vmm.CallControl(ctl, vmm.ControlRequest{Command: "stop", Timeout: 2000})
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("pmvm run did not stop")
	}

	before := fileSum(t, backing)
	var out, errb bytes.Buffer
	assert.Equal(t, exitFailure, runMain([]string{"run", cfg, "--incoming", statePath, "--log-level", "error"}, &out, &errb))
	assert.Contains(t, errb.String(), "it was already resumed")
	assert.Empty(t, out.String(), "the guest did not run")
	assert.Equal(t, before, fileSum(t, backing), "guest memory untouched by the refusal")
}
