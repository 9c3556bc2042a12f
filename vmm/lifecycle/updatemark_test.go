package lifecycle

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
)

// TestRunRefusedDuringAHostUpdate proves that while a host update's
// marker is in runtime_dir, pmvm run refuses to start a VM (the kexec
// would kill it unsaved), before anything is created, saying why and how
// the marker goes away; and that it runs again once the marker is gone.
func TestRunRefusedDuringAHostUpdate(t *testing.T) {
	dir := t.TempDir()
	host := &configs.Host{StateDir: filepath.Join(dir, "state"), RuntimeDir: filepath.Join(dir, "run")}
	h := HostConfig{Path: "/etc/pmvm/host.toml", Host: host}
	require.NoError(t, refuseDuringUpdate(h))

	require.NoError(t, MarkUpdate(host.RuntimeDir, "kernel /boot/vmlinuz-new"))
	console := filepath.Join(dir, "console.log")
	cfg := &configs.VM{Name: "vm1", VCPUs: 1, Console: configs.Console{Output: configs.ConsoleFile, Path: console}}
	_, err := Run(cfg, RunOptions{ConfigPath: "/etc/pmvm/vm1.toml", Host: h})
	require.Error(t, err)
	msg := err.Error()
	assert.Contains(t, msg, "a host update is under way")
	assert.Contains(t, msg, "kernel /boot/vmlinuz-new")
	assert.Contains(t, msg, filepath.Join(host.RuntimeDir, UpdateMarkerName))
	assert.Contains(t, msg, "guest memory was not touched")
	assert.NoFileExists(t, console, "refused before anything was created")

	require.NoError(t, UnmarkUpdate(host.RuntimeDir))
	assert.NoError(t, refuseDuringUpdate(h))
	assert.NoError(t, UnmarkUpdate(host.RuntimeDir), "no marker: nothing to do")
}
