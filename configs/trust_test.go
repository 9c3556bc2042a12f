package configs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// trustedHost lays out a host whose every path is root's and private: a
// host.toml, vm_dir, state_dir (not yet created) and a pre-kexec hook.
func trustedHost(t *testing.T) (hostPath string, h *Host) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test changes file owners: run it as root (make test does)")
	}
	// Under /var/tmp (sticky and world-writable: allowed), not /tmp, where
	// Validate refuses a state_dir.
	root, err := os.MkdirTemp("/var/tmp", "pmvm-trust-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	vmDir := filepath.Join(root, "vms")
	require.NoError(t, os.Mkdir(vmDir, 0o755))
	hook := filepath.Join(root, "hook")
	require.NoError(t, os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o755))
	hostPath = filepath.Join(root, "host.toml")
	text := "vm_dir = \"" + vmDir + "\"\nstate_dir = \"" + filepath.Join(root, "state") + "\"\n" +
		"[hooks.pre-kexec]\ncommand = [\"" + hook + "\"]\n"
	require.NoError(t, os.WriteFile(hostPath, []byte(text), 0o644))
	h, err = LoadHost(hostPath)
	require.NoError(t, err, "a host laid out by root with private modes is trusted")
	return hostPath, h
}

// TestLoadHostRefusesPathsOthersCanChange proves finding 22 of issue 12:
// a host config, vm_dir, state_dir or hook that a user other than root can
// change (own it, or write it or a directory above it) is refused, naming
// the path and the command that fixes it.
func TestLoadHostRefusesPathsOthersCanChange(t *testing.T) {
	for _, tc := range []struct {
		proves string
		spoil  func(t *testing.T, hostPath string, h *Host) (what string)
		fix    string
	}{
		{"a world-writable host config", func(t *testing.T, p string, _ *Host) string {
			require.NoError(t, os.Chmod(p, 0o666))
			return "host config"
		}, "chmod o-w"},
		{"a vm_dir owned by another user", func(t *testing.T, _ string, h *Host) string {
			require.NoError(t, os.Chown(h.VMDir, 1234, 0))
			return "vm_dir"
		}, "chown root"},
		{"a group-writable hook of a non-root group", func(t *testing.T, _ string, h *Host) string {
			hook := h.Hooks.Get(PhasePreKexec).Command[0]
			require.NoError(t, os.Chown(hook, 0, 1234))
			require.NoError(t, os.Chmod(hook, 0o775))
			return "hooks." + PhasePreKexec
		}, "chmod g-w"},
		{"a state_dir to be created in a world-writable directory without the sticky bit", func(t *testing.T, _ string, h *Host) string {
			require.NoError(t, os.Chmod(filepath.Dir(h.StateDir), 0o777))
			return "state_dir"
		}, "chmod o-w"},
	} {
		t.Run(tc.proves, func(t *testing.T) {
			hostPath, h := trustedHost(t)
			what := tc.spoil(t, hostPath, h)
			_, err := LoadHost(hostPath)
			require.Error(t, err, "LoadHost must refuse %s", tc.proves)
			var te *TrustError
			require.True(t, errors.As(err, &te), "the refusal is a TrustError: %v", err)
			assert.Contains(t, err.Error(), what)
			assert.Contains(t, err.Error(), tc.fix, "the message says how to fix it")
			assert.Contains(t, err.Error(), hostPath, "every error starts with the host config's path")
		})
	}
}

// TestCheckTrustFollowsSymlinks proves a symlink is judged by its target:
// a private link to a world-writable hook is still refused.
func TestCheckTrustFollowsSymlinks(t *testing.T) {
	hostPath, h := trustedHost(t)
	hook := h.Hooks.Get(PhasePreKexec).Command[0]
	target := filepath.Join(filepath.Dir(hook), "real-hook")
	require.NoError(t, os.Rename(hook, target))
	require.NoError(t, os.Symlink(target, hook))
	require.NoError(t, h.CheckTrust(hostPath), "a link to a private hook is fine")
	require.NoError(t, os.Chmod(target, 0o777))
	err := h.CheckTrust(hostPath)
	require.Error(t, err)
	assert.Contains(t, err.Error(), target)
}
