package kexec

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm"
)

// writeState writes a reboot-mode state file for VM name at path.
func writeState(t *testing.T, path, name string) {
	t.Helper()
	f := &state.File{Header: state.Header{Created: time.Now(), PMVMVersion: "test", VMName: name, Mode: memspec.ModeReboot}}
	require.NoError(t, f.AddJSON("machine", 1, map[string]string{"vm": name}))
	require.NoError(t, state.WriteFile(path, f))
}

// TestRestoreFailuresLeaveStateFilesAlone proves that a VM whose restore
// fails does not stop the others and keeps its state file where it is:
// a state file whose VM has no config, a pmvm that refuses the file (exits
// 1; the error quotes its log), a VM that is already running (no second
// pmvm is started on its memory). A file named *.state that is not a state
// file is ignored; files not named *.state are not looked at. The good VM
// is restored, its console and pmvm log in separate files; the timeline
// stays in place for a retry.
func TestRestoreFailuresLeaveStateFilesAlone(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	log, _ := testLog()

	goodCfg, goodCtl := writeVMConfig(t, h, "good", kindPreserved)
	t.Cleanup(func() { stopRestored(t, goodCtl) })
	writeState(t, h.StatePath("good"), "good")

	writeState(t, h.StatePath("orphan"), "orphan") // no config

	refusedCfg, _ := writeVMConfig(t, h, "refused", kindPreserved)
	require.NoError(t, os.WriteFile(refusedCfg+".fail", []byte("the config does not describe the saved machine: vcpus: saved machine has 1, config has 2\n"), 0o644))
	writeState(t, h.StatePath("refused"), "refused")

	spentCfg, _ := writeVMConfig(t, h, "spent", kindPreserved)
	require.NoError(t, os.WriteFile(spentCfg+".spend", nil, 0o644))
	writeState(t, h.StatePath("spent"), "spent")

	busy := startFakeVM(t, h, "busy", kindPreserved, vmm.StateRunning)
	writeState(t, h.StatePath("busy"), "busy")

	require.NoError(t, os.WriteFile(filepath.Join(h.StateDir, "junk.state"), []byte("not a state file at all"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(h.StateDir, "README"), []byte("hello"), 0o600))

	var out bytes.Buffer
	rep, err := Restore(context.Background(), h, RestoreOptions{Log: log, Out: &out, PMVM: fakePMVMCommand(t)})
	t.Log("\n" + out.String())
	require.Error(t, err)
	res := map[string]RestoreResult{}
	for _, r := range rep.Results {
		res[r.VM] = r
	}
	require.Len(t, res, 5)
	assert.NoError(t, res["good"].Err)
	assert.Len(t, resumedFiles(t, h.StateDir, "good"), 1)
	args, aerr := os.ReadFile(goodCfg + ".args")
	require.NoError(t, aerr)
	assert.Contains(t, string(args), "run "+goodCfg+" --incoming "+h.StatePath("good"))
	// The guest console (stdout) and pmvm's log (stderr) go to files of
	// their own: interleaved, a log line could split a console line.
	if assert.NotEmpty(t, res["good"].Console) {
		console, _ := os.ReadFile(res["good"].Console)
		assert.Contains(t, string(console), fakeConsoleLine)
		assert.NotContains(t, string(console), resumedMarker)
	}
	pmvmLog, _ := os.ReadFile(res["good"].LogFile)
	assert.Contains(t, string(pmvmLog), resumedMarker)
	assert.NotContains(t, string(pmvmLog), fakeConsoleLine)

	assert.ErrorContains(t, res["orphan"].Err, `no config in `+h.VMDir+` names VM "orphan"`)
	assert.ErrorContains(t, res["refused"].Err, "exited (status 1) before its VM reported running")
	assert.ErrorContains(t, res["refused"].Err, "vcpus: saved machine has 1, config has 2", "the error quotes pmvm's log")
	assert.ErrorContains(t, res["refused"].Err, "untouched")
	assert.ErrorContains(t, res["busy"].Err, `VM "busy" is already running`)
	// pmvm spent the state file before a wake it did not finish: the
	// error says where the file went, never that it is untouched.
	assert.ErrorContains(t, res["spent"].Err, "aside to "+h.StatePath("spent")+".resumed-")
	assert.NotContains(t, res["spent"].Err.Error(), "untouched")
	assert.Len(t, resumedFiles(t, h.StateDir, "spent"), 1)
	assert.Equal(t, []string{"status"}, busy.commands(), "nothing but status was sent to the running VM")
	for _, name := range []string{"orphan", "refused", "busy"} {
		assert.FileExists(t, h.StatePath(name), "a failed restore leaves %s's state file in place", name)
		assert.Empty(t, resumedFiles(t, h.StateDir, name))
	}
	assert.FileExists(t, filepath.Join(h.StateDir, "junk.state"))
	require.Len(t, rep.Ignored, 1)
	assert.Contains(t, rep.Ignored[0], "junk.state: not a pmvm state file")
	assert.FileExists(t, h.TimelinePath(), "an incomplete restore keeps the timeline for the retry")
	assert.Contains(t, err.Error(), `VM "orphan"`)
	assert.Contains(t, out.String(), "no update timeline")
}

// TestRestoreTwoStateFilesForOneVM proves two state files holding the same
// VM are both refused: restoring one could resume an old guest.
func TestRestoreTwoStateFilesForOneVM(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	writeVMConfig(t, h, "dup", kindPreserved)
	writeState(t, h.StatePath("dup"), "dup")
	writeState(t, filepath.Join(h.StateDir, "copy.state"), "dup")
	log, _ := testLog()
	rep, err := Restore(context.Background(), h, RestoreOptions{Log: log, Out: &bytes.Buffer{}, PMVM: fakePMVMCommand(t)})
	require.Error(t, err)
	require.Len(t, rep.Results, 2)
	for _, r := range rep.Results {
		assert.ErrorContains(t, r.Err, "several state files hold VM \"dup\"")
		assert.FileExists(t, r.StateFile)
	}
}
