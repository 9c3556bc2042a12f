package lab

import (
	"fmt"
	"net"
	"time"

	"github.com/pmvm/pmvm/guestpm"
)

// DialAgent connects to a qemu-guest-agent socket (the unix socket of a
// QEMU "-chardev socket,server=on" wired to the guest's isa-serial port,
// or pmvm's [agent] socket) and returns pmvm's own agent client on it, so
// the tests speak the protocol exactly as pmvm does. It retries until the
// socket exists or timeout passes (0: one try): the process serving it may
// still be starting. It does not talk to the agent yet; Client.Sync waits
// for an agent that is still starting.
func DialAgent(path string, timeout time.Duration) (*guestpm.Client, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			return guestpm.New(c, guestpm.Options{}), nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("agent socket %s: %w", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
