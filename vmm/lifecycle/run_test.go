package lifecycle

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/vmm"
)

// TestRunRefusesBootOverSavedGuest proves that Run refuses to boot a VM
// afresh while the host's state_dir holds its saved guest, before it
// creates anything (here: the console file, which the run would open
// first), naming the file and both ways out; a resume of that file is not
// refused for it.
func TestRunRefusesBootOverSavedGuest(t *testing.T) {
	dir := t.TempDir()
	host := &configs.Host{StateDir: filepath.Join(dir, "state")}
	require.NoError(t, os.MkdirAll(host.StateDir, 0o700))
	statePath := host.StatePath("vm1")
	require.NoError(t, os.WriteFile(statePath, []byte("not a state file"), 0o600))
	console := filepath.Join(dir, "console.log")
	cfg := &configs.VM{Name: "vm1", VCPUs: 1, Console: configs.Console{Output: configs.ConsoleFile, Path: console}}
	opts := RunOptions{Log: zerolog.Nop(), ConfigPath: "/etc/pmvm/vm1.toml", Host: HostConfig{Path: "/etc/pmvm/host.toml", From: "--host-config", Host: host}}

	outcome, err := Run(cfg, opts)
	require.Error(t, err)
	assert.Equal(t, vmm.OutcomeError, outcome)
	msg := err.Error()
	assert.Contains(t, msg, `VM "vm1" has a state file that does not read`)
	assert.Contains(t, msg, "booting it afresh would overwrite the memory that guest is suspended in")
	assert.Contains(t, msg, "pmvm run /etc/pmvm/vm1.toml --incoming "+statePath)
	assert.Contains(t, msg, "move the file out of "+host.StateDir)
	assert.NoFileExists(t, console, "refused before anything was created")

	// Without a host config there is no state_dir to look in.
	assert.NoError(t, refuseBootOverSaved(cfg, HostConfig{Path: "/nonexistent/host.toml"}, "vm1.toml"))
	// An empty state_dir refuses nothing.
	require.NoError(t, os.Remove(statePath))
	assert.NoError(t, refuseBootOverSaved(cfg, opts.Host, "vm1.toml"))
}

// TestJoinCgroupWithoutCgroups proves when pmvm run stays in the cgroup
// it was started in (no host config, cgroups = false: said in the log),
// and that a pids limit the VM cannot run under is refused before any
// cgroup is made, naming the host config.
func TestJoinCgroupWithoutCgroups(t *testing.T) {
	cfg := &configs.VM{Name: "vm1", VCPUs: 4}
	var out bytes.Buffer
	log := zerolog.New(&out)

	require.NoError(t, JoinCgroup(cfg, HostConfig{Path: "/etc/pmvm/host.toml", From: "the default"}, log))
	assert.Contains(t, out.String(), "no host config (the default): no cgroup of the VM's own")
	out.Reset()

	off := false
	require.NoError(t, JoinCgroup(cfg, HostConfig{Path: "/h.toml", Host: &configs.Host{Limits: configs.Limits{Cgroups: &off}}}, log))
	assert.Contains(t, out.String(), "cgroups = false in the host config")

	low := &configs.Host{Limits: configs.Limits{CgroupParent: "pmvm-lifecycle-test-never-made", VMLimits: configs.VMLimits{Pids: 2}}}
	err := JoinCgroup(cfg, HostConfig{Path: "/h.toml", Host: low}, log)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is too low for VM \"vm1\" with 4 vCPU(s)")
	assert.True(t, strings.HasSuffix(err.Error(), "(host config /h.toml)"), err.Error())
}
