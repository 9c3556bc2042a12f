package vmm

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/vmm/x86"
	"github.com/pmvm/pmvm/vmm/x86/x86test"
)

// TestCloseWhileTheAgentClientTypes proves Machine.Close is safe while a
// client of the agent socket keeps sending: the bytes it sends during and
// after Close must not reach the closed VM's interrupt controller (before
// the fix the feeding goroutine raised COM2's interrupt on a VM Close had
// set to nil: a data race under -race, a nil dereference without it). The
// socket, owned by the caller, stays usable and the client is dropped.
func TestCloseWhileTheAgentClientTypes(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "bzImage")
	require.NoError(t, os.WriteFile(kernel, x86test.BzImage([]byte{0xeb, 0xfe}), 0o644))
	cfg := &configs.VM{Name: "tiny", VCPUs: 1, Boot: configs.Boot{Kernel: kernel},
		Memory: []configs.Memory{{Name: "ram0", Size: configs.Size(64 << 20), Backing: memspec.BackingAnonymous, Shared: true}}}
	sock := filepath.Join(dir, "agent.sock")
	agent, err := ListenSerial(sock)
	require.NoError(t, err)
	defer agent.Close()
	m, err := New(cfg, Options{Log: zerolog.New(zerolog.NewTestWriter(t)), Agent: agent})
	require.NoError(t, err, "this test needs /dev/kvm")
	require.NoError(t, m.Boot())
	// The guest enables COM2's receive interrupt, as its agent driver does.
	m.bus.Out(x86.COM2Port+1, []byte{0x01})

	c, err := net.Dial("unix", sock)
	require.NoError(t, err)
	defer c.Close()
	// Wait until the client is attached: its first byte raises the line.
	require.Eventually(t, func() bool { agent.mu.Lock(); defer agent.mu.Unlock(); return agent.conn != nil }, 5*time.Second, time.Millisecond)

	stop := make(chan struct{})
	typed := make(chan struct{})
	go func() { // the client keeps typing; each read by "the guest" re-arms the interrupt
		defer close(typed)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	go func() { // the guest reads COM2, so the receive interrupt keeps edging
		for {
			select {
			case <-stop:
				return
			default:
			}
			m.bus.In(x86.COM2Port, make([]byte, 1))
			time.Sleep(50 * time.Microsecond)
		}
	}()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, m.Close())
	time.Sleep(20 * time.Millisecond) // bytes after Close must go nowhere
	close(stop)
	<-typed
}
