package kexec

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runConfigOf reads a /proc/PID directory: the config of "pmvm run", made
// absolute from the process's working directory when relative; "" for any
// other process or one that cannot be read.
func TestRunConfigOfReadsCmdlineAndCwd(t *testing.T) {
	root := t.TempDir()
	cwd := filepath.Join(root, "etc")
	require.NoError(t, os.MkdirAll(cwd, 0o755))
	proc := func(name, cmdline string) string {
		dir := filepath.Join(root, name)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "cmdline"), []byte(cmdline), 0o644))
		require.NoError(t, os.Symlink(cwd, filepath.Join(dir, "cwd")))
		return dir
	}
	assert.Equal(t, filepath.Join(cwd, "a.toml"), runConfigOf(proc("1", "pmvm\x00run\x00a.toml\x00")))
	assert.Equal(t, "/etc/pmvm/vms/b.toml", runConfigOf(proc("2", "/usr/bin/pmvm\x00run\x00--log-level\x00debug\x00/etc/pmvm/vms/b.toml\x00")))
	assert.Equal(t, "", runConfigOf(proc("3", "pmvm\x00status\x00a\x00")))
	assert.Equal(t, "", runConfigOf(proc("4", "")), "a kernel thread has an empty cmdline")
	assert.Equal(t, "", runConfigOf(filepath.Join(root, "gone")), "a process that exited meanwhile")
}

// An idle VM that a pmvm process runs (its socket does not answer yet) is
// refused, naming the process, and leaves the idle list.
func TestNotAnsweringAndWithoutIndexes(t *testing.T) {
	v := notAnswering(PlanVM{Name: "a", Control: "/run/a.sock", OK: true}, 42)
	assert.False(t, v.OK)
	assert.Equal(t, "unknown", v.RunState)
	assert.Contains(t, v.Reason, "pmvm process 42 runs it but its control socket /run/a.sock does not answer")

	vms := []PlanVM{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	assert.Equal(t, vms, withoutIndexes(vms, nil))
	assert.Equal(t, []PlanVM{{Name: "a"}, {Name: "c"}}, withoutIndexes(vms, map[int]bool{1: true}))
}
