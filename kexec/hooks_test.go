package kexec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
)

// TestRunHookEnvAndOutput proves a hook gets the documented PMVM_*
// variables (VMs and state files comma-separated, in the same order) on
// top of pmvm's environment, and that each line of its stdout and stderr
// reaches the log with the phase and the stream.
func TestRunHookEnvAndOutput(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	t.Setenv("PMVM_TEST_INHERITED", "yes")
	hook := &configs.Hook{Command: []string{"/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2; env > " + envFile}, Timeout: configs.NewDuration(10 * time.Second)}
	log, buf := testLog()
	err := RunHook(context.Background(), hook, HookEnv{
		Phase: configs.PhasePreKexec, VMs: []string{"web1", "db2"},
		States: []string{"/s/web1.state", "/s/db2.state"}, Kernel: "/boot/vmlinuz-new", Timeline: "/s/update-timeline.json",
	}, log)
	require.NoError(t, err)
	env := readEnvFile(t, envFile)
	assert.Equal(t, "pre-kexec", env["PMVM_PHASE"])
	assert.Equal(t, "web1,db2", env["PMVM_VM"])
	assert.Equal(t, "/s/web1.state,/s/db2.state", env["PMVM_STATE"])
	assert.Equal(t, "/boot/vmlinuz-new", env["PMVM_KERNEL"])
	assert.Equal(t, "/s/update-timeline.json", env["PMVM_TIMELINE"])
	assert.Equal(t, "yes", env["PMVM_TEST_INHERITED"])
	_, hasErr := env["PMVM_ERROR"]
	assert.False(t, hasErr, "PMVM_ERROR is for on-failure only")
	logs := buf.String()
	assert.Contains(t, logs, `"hook":"pre-kexec","stream":"stdout","message":"to-stdout"`)
	assert.Contains(t, logs, `"hook":"pre-kexec","stream":"stderr","message":"to-stderr"`)
	assert.Contains(t, logs, "hook succeeded")

	// on-failure also gets PMVM_ERROR, on one line.
	require.NoError(t, RunHook(context.Background(), hook, HookEnv{Phase: configs.PhaseOnFailure, Error: "save failed\nVM x"}, log))
	assert.Equal(t, "save failed; VM x", readEnvFile(t, envFile)["PMVM_ERROR"])
}

// TestRunHookTimeoutKillsProcessGroup proves a hook that outlives its
// timeout is killed with everything it started in its process group (a
// background child holding the output pipe included), and that RunHook
// returns promptly with a timeout error.
func TestRunHookTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	hook := &configs.Hook{
		Command: []string{"/bin/sh", "-c", "sleep 300 & echo $! > " + pidFile + "; echo started; sleep 300"},
		Timeout: configs.NewDuration(300 * time.Millisecond),
	}
	log, _ := testLog()
	start := time.Now()
	err := RunHook(context.Background(), hook, HookEnv{Phase: configs.PhasePreSave}, log)
	took := time.Since(start)
	require.Error(t, err)
	var he *HookError
	require.True(t, errors.As(err, &he))
	assert.True(t, he.TimedOut, "%v", err)
	assert.Contains(t, err.Error(), "timed out; its process group was killed")
	assert.Contains(t, err.Error(), "started", "the error quotes the hook's last output")
	assert.Less(t, took, 5*time.Second, "the timeout is enforced")

	b, rerr := os.ReadFile(pidFile)
	require.NoError(t, rerr)
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NotZero(t, child)
	require.Eventually(t, func() bool { return processGone(child) }, 5*time.Second, 10*time.Millisecond,
		"the hook's background child %d must die with its group", child)
}

// TestRunHookFailure proves a failing hook's error names the phase, the
// exit status and its last lines of output; a missing program is an error
// too; a nil hook is a no-op.
func TestRunHookFailure(t *testing.T) {
	log, _ := testLog()
	hook := &configs.Hook{Command: []string{"/bin/sh", "-c", "echo one; echo two; echo three >&2; exit 3"}, Timeout: configs.NewDuration(5 * time.Second)}
	err := RunHook(context.Background(), hook, HookEnv{Phase: configs.PhasePreSave}, log)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "pre-save hook")
	assert.Contains(t, err.Error(), "exit status 3")
	assert.Contains(t, err.Error(), "one")
	assert.Contains(t, err.Error(), "three")

	err = RunHook(context.Background(), &configs.Hook{Command: []string{"/nonexistent/hook"}}, HookEnv{Phase: configs.PhasePostRestore}, log)
	assert.ErrorContains(t, err, "/nonexistent/hook")
	assert.NoError(t, RunHook(context.Background(), nil, HookEnv{Phase: configs.PhasePreSave}, log))
}
