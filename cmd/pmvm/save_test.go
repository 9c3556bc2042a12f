package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm"
)

// TestSaveRefusalsLeaveTheGuestRunning proves that a save which cannot
// succeed is refused before the guest is touched: a VM not in mode
// "reboot", and a state file whose directory does not exist. Each refusal
// comes at once (no suspend through the agent was tried: with no agent
// that would take the whole timeout), says what is wrong, and the guest
// still runs afterwards.
func TestSaveRefusalsLeaveTheGuestRunning(t *testing.T) {
	spin := []byte{0xeb, 0xfe} // runs forever, no agent
	cases := []struct {
		name   string
		config func(t *testing.T, dir string) string
		state  func(dir string) string
		want   string
	}{
		{"mode none", func(t *testing.T, dir string) string {
			return writeConfig(t, dir, tinyKernel(t, dir, spin), "")
		}, func(dir string) string { return filepath.Join(dir, "tiny.state") }, `mode "none"`},
		{"no state directory", func(t *testing.T, dir string) string {
			return rebootModeConfig(t, dir, tinyKernel(t, dir, spin), shmBacking(t, ""), 1)
		}, func(dir string) string { return filepath.Join(dir, "missing", "tiny.state") }, "does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := c.config(t, dir)
			ctl := filepath.Join(dir, "control.sock")
			exited := make(chan int, 1)
			go func() {
				var o, e bytes.Buffer
				exited <- runMain([]string{"run", cfg, "--log-level", "error"}, &o, &e)
			}()
			t.Cleanup(func() {
				vmm.CallControl(ctl, vmm.ControlRequest{Command: "stop", Timeout: 2000})
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					t.Error("pmvm run did not stop")
				}
			})
			status := func() string {
				var o, e bytes.Buffer
				cmdStatus([]string{"tiny", "--control", ctl}, &o, &e)
				return o.String()
			}
			require.Eventually(t, func() bool { return strings.Contains(status(), "runstate:  running") }, 10*time.Second, 10*time.Millisecond)

			var so, se bytes.Buffer
			start := time.Now()
			code := cmdSave([]string{"tiny", "--control", ctl, "--state", c.state(dir), "--timeout", "30s"}, &so, &se)
			assert.Equal(t, exitFailure, code)
			assert.Less(t, time.Since(start), 5*time.Second, "refused before any suspend was tried")
			assert.Contains(t, se.String(), c.want)
			assert.Contains(t, se.String(), "the guest was not suspended")
			assert.Contains(t, status(), "runstate:  running")
			assert.NoFileExists(t, c.state(dir))
		})
	}
}

// TestResumedStateFileIsMovedAside proves that once a resumed guest runs,
// its state file is renamed to FILE.resumed-<time> by pmvm run --incoming
// itself, and that resuming FILE again is refused with a message saying
// why, the guest's memory untouched: the old state over memory the guest
// has since changed would corrupt it.
func TestResumedStateFileIsMovedAside(t *testing.T) {
	_, cfg, backing, statePath := savedGuest(t)
	var out, errb bytes.Buffer
	require.Equal(t, exitPowerOff, runMain([]string{"run", cfg, "--incoming", statePath, "--log-level", "info"}, &out, &errb), errb.String())
	assert.Equal(t, "WM\x80", out.String(), "the guest resumed")
	assert.Contains(t, errb.String(), "state file moved aside")
	assert.NoFileExists(t, statePath)
	moved, _ := filepath.Glob(statePath + ".resumed-*")
	require.Len(t, moved, 1)

	before := fileSum(t, backing)
	out.Reset()
	errb.Reset()
	assert.Equal(t, exitFailure, runMain([]string{"run", cfg, "--incoming", statePath, "--log-level", "error"}, &out, &errb))
	assert.Contains(t, errb.String(), "was already resumed (it is now "+moved[0]+")")
	assert.Empty(t, out.String(), "the guest did not run")
	assert.Equal(t, before, fileSum(t, backing), "guest memory untouched by the refusal")
}

// TestRunRefusesColdBootOverASavedGuest proves pmvm run without --incoming
// refuses a VM whose saved guest waits in the host's state_dir (where pmvm
// host update puts it), naming the file and both ways out, and leaves the
// memory the guest is suspended in untouched; resuming it still works.
func TestRunRefusesColdBootOverASavedGuest(t *testing.T) {
	dir, cfg, backing, saved := savedGuest(t)
	stateDir, err := os.MkdirTemp("/var/tmp", "pmvm-coldboot-test-") // state_dir must not be under /tmp
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(stateDir) })
	statePath := filepath.Join(stateDir, "tiny.state")
	// /tmp and /var/tmp are often two filesystems: move by copy.
	b, err := os.ReadFile(saved)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(statePath, b, 0o600))
	require.NoError(t, os.Remove(saved))
	hostCfg := filepath.Join(dir, "host.toml")
	require.NoError(t, os.WriteFile(hostCfg, []byte(fmt.Sprintf("state_dir = %q\n[limits]\ncgroups = false\n", stateDir)), 0o644))

	before := fileSum(t, backing)
	var out, errb bytes.Buffer
	assert.Equal(t, exitFailure, runMain([]string{"run", cfg, "--host-config", hostCfg, "--log-level", "error"}, &out, &errb))
	assert.Contains(t, errb.String(), `VM "tiny" has the guest saved `)
	assert.Contains(t, errb.String(), "in "+statePath)
	assert.Contains(t, errb.String(), "--incoming "+statePath)
	assert.Contains(t, errb.String(), "move the file out of "+stateDir)
	assert.Empty(t, out.String(), "nothing booted")
	assert.Equal(t, before, fileSum(t, backing), "the saved guest's memory is untouched")

	out.Reset()
	errb.Reset()
	require.Equal(t, exitPowerOff, runMain([]string{"run", cfg, "--host-config", hostCfg, "--incoming", statePath, "--log-level", "error"}, &out, &errb), errb.String())
	assert.Equal(t, "WM\x80", out.String(), "the saved guest resumes")
}
