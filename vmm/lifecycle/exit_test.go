package lifecycle

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/timeline"
)

// dyingPMVMEnv makes this test binary act as a pmvm that answers one save
// on the control socket named by the variable, then is killed (SIGKILL):
// its socket file stays behind, as a killed pmvm's does.
const dyingPMVMEnv = "PMVM_LIFECYCLE_TEST_DYING_PMVM"

func TestMain(m *testing.M) {
	if sock := os.Getenv(dyingPMVMEnv); sock != "" {
		dyingPMVM(sock)
	}
	os.Exit(m.Run())
}

func dyingPMVM(sock string) {
	ln, err := net.Listen("unix", sock)
	if err != nil {
		os.Exit(2)
	}
	c, err := ln.Accept()
	if err != nil {
		os.Exit(2)
	}
	bufio.NewReader(c).ReadBytes('\n')
	tl := timeline.New("save")
	tl.Mark("", StepSaveRequested, "")
	tl.Mark("", StepStateDurable, "")
	json.NewEncoder(c).Encode(vmm.ControlResponse{OK: true, Timeline: tl})
	c.Close()
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// TestWaitExitedSeesAKilledPMVM proves that a pmvm killed right after it
// answered a save is seen dead at once, by its process being gone (nobody
// accepts on its socket), not waited for until the timeout because its
// socket file is still there; and that a pmvm still serving is told apart
// from both.
func TestWaitExitedSeesAKilledPMVM(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), dyingPMVMEnv+"="+sock)
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	tl, err := RequestSave(sock, "/tmp/vm1.state", 5*time.Second)
	require.NoError(t, err)
	<-exited
	assert.FileExists(t, sock, "a killed pmvm leaves its socket file behind")

	start := time.Now()
	got := WaitExited(sock, 5*time.Second, tl, "vm1")
	assert.Equal(t, PMVMDied, got, got.String())
	assert.Less(t, time.Since(start), 2*time.Second, "seen dead at once, not after the wait")
	_, ok := tl.Last("vm1", StepPMVMExited)
	assert.True(t, ok, "its end is in the timeline")

	// A pmvm that still serves is still running; one that closed its
	// socket has exited.
	m := &fakeMachine{state: vmm.StateRunning}
	live := serve(t, m, nil)
	assert.Equal(t, PMVMRunning, WaitExited(live, 50*time.Millisecond, nil, ""))
	m.onFinish()
	assert.Equal(t, PMVMExited, WaitExited(live, 5*time.Second, nil, ""))
}
