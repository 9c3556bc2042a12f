package main

import (
	"bytes"
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
