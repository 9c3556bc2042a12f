package vmm

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm/devices/uart"
)

// quietLine is an interrupt line going nowhere.
type quietLine struct{}

func (quietLine) SetLevel(bool) {}

// flakyListener fails its first n Accepts the way a process out of file
// descriptors does (EMFILE), then accepts as the real one.
type flakyListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestControlSocketSurvivesAFlood proves the control socket stays usable:
// accept errors such as EMFILE are retried (before, one ended the accept
// loop for good), a flood of 150 connections held open is bounded (the
// connections beyond maxControlConns are answered with an error and
// closed, so they cannot use up pmvm's descriptors), and once the flood
// is gone the VM is saved and stopped through the socket.
func TestControlSocketSurvivesAFlood(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, done := suspendedMachine(t, ctx)
	dir := t.TempDir()
	path := filepath.Join(dir, "control.sock")
	statePath := filepath.Join(dir, "vm.state")
	ln, err := listenUnix(path)
	require.NoError(t, err)
	fl := &flakyListener{Listener: ln}
	fl.failures.Store(3)
	saved := make(chan struct{})
	s := serveControlOn(fl, path, uint32(os.Getuid()), m, zerolog.New(zerolog.NewTestWriter(t)), map[string]CommandFunc{
		"save": func(context.Context, ControlRequest) ControlResponse {
			if err := m.SaveState(statePath, "test"); err != nil {
				return ControlResponse{Error: err.Error()}
			}
			close(saved)
			return ControlResponse{OK: true}
		},
	})
	defer s.Close()

	const flood = 150
	conns := make([]net.Conn, 0, flood)
	for range flood {
		c, err := net.Dial("unix", path)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	// Those beyond the bound are told so, in a response line, and closed.
	var refused atomic.Int32
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			line, err := bufio.NewReader(c).ReadBytes('\n')
			if err != nil {
				return // held open by the server: one of the bounded ones
			}
			var resp ControlResponse
			if assert.NoError(t, json.Unmarshal(line, &resp)) && assert.Contains(t, resp.Error, "too many control connections") {
				refused.Add(1)
			}
		}(c)
	}
	wg.Wait()
	assert.Equal(t, int32(flood-maxControlConns), refused.Load(), "every connection beyond the bound is refused with an error")
	for _, c := range conns {
		c.Close()
	}
	assert.Less(t, fl.failures.Load(), int32(0), "the injected accept errors were met and retried")

	// The flood is gone: the VM can still be saved and stopped.
	require.Eventually(t, func() bool {
		resp, err := CallControl(path, ControlRequest{Command: "save", Timeout: 5000})
		return err == nil && resp.OK
	}, 10*time.Second, 20*time.Millisecond, "save through the control socket after the flood")
	<-saved
	resp, err := CallControl(path, ControlRequest{Command: "stop", Timeout: 5000})
	require.NoError(t, err)
	require.True(t, resp.OK, resp.Error)
	select {
	case o := <-done:
		assert.Equal(t, OutcomeStopped.String(), o.String())
	case <-ctx.Done():
		t.Fatal("the machine did not stop")
	}
}

// TestAgentSocketSurvivesAcceptErrors proves an accept error such as
// EMFILE does not end the agent socket's accept loop: a client connecting
// after it still reaches the guest's COM2.
func TestAgentSocketSurvivesAcceptErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.sock")
	ln, err := listenUnix(path)
	require.NoError(t, err)
	fl := &flakyListener{Listener: ln}
	fl.failures.Store(3)
	sp := &SerialPort{ln: fl, path: path}
	defer sp.Close()
	u := uart.New(quietLine{}, io.Discard)
	sp.attach(u, zerolog.New(zerolog.NewTestWriter(t)))
	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("h")) // the FIFO is off: it holds one byte
	require.NoError(t, err)
	require.Eventually(t, func() bool { return string(u.State().RX) == "h" }, 5*time.Second, 5*time.Millisecond,
		"the client's bytes reach the UART after the accept errors")
}
