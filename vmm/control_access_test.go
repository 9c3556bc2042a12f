package vmm

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/configs"
)

// openControlServer serves a control socket any local user can connect
// to (so the credentials check, not the file mode, is what is tested),
// owned by uid owner.
func openControlServer(t *testing.T, owner uint32) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pmvm-ctl-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	path := filepath.Join(dir, "control.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(path, 0o666))
	m := newMachine(&configs.VM{Name: "ctl", VCPUs: 1, Memory: []configs.Memory{{Name: "ram0", Size: 64 << 20}}}, zerolog.Nop())
	s := serveControlOn(ln, path, owner, m, zerolog.New(zerolog.NewTestWriter(t)), nil)
	t.Cleanup(func() { s.Close() })
	return path
}

// askAs sends line on a new connection to path, connecting with effective
// uid euid (on this OS thread only; the test must run as root for any
// other uid than its own), and returns the answer line.
func askAs(t *testing.T, path string, euid int, line string) ControlResponse {
	t.Helper()
	var c net.Conn
	var err error
	if euid == os.Geteuid() {
		c, err = net.Dial("unix", path)
	} else {
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread() // not unlocked if the uid could not be put back: the thread dies with the goroutine
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(euid), ^uintptr(0)); e != 0 {
				err = e
				return
			}
			c, err = net.Dial("unix", path) // SO_PEERCRED records this thread's euid
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e == 0 {
				runtime.UnlockOSThread()
			}
		}()
		<-done
	}
	require.NoError(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte(line + "\n")) // a refused peer may find the connection closed already: the answer is there
	answer, err := bufio.NewReader(c).ReadBytes('\n')
	require.NoError(t, err, "every refusal is answered before the connection closes")
	var resp ControlResponse
	require.NoError(t, json.Unmarshal(answer, &resp))
	return resp
}

// TestControlSocketChecksThePeer proves the control socket answers only
// its owner (the uid pmvm runs as) and root, by the peer's credentials
// (SO_PEERCRED), whatever the socket file's mode lets connect.
func TestControlSocketChecksThePeer(t *testing.T) {
	if os.Geteuid() != 0 {
		// Not root: this process is a foreign peer to a socket owned by another uid.
		path := openControlServer(t, uint32(os.Geteuid())+1)
		resp := askAs(t, path, os.Geteuid(), `{"command":"status"}`)
		assert.False(t, resp.OK)
		assert.Contains(t, resp.Error, "not allowed")
		t.Log("not root: only the refusal of a foreign uid is tested, not root's and the owner's access from other uids")
		return
	}
	const owner, stranger = 4242, 65534
	path := openControlServer(t, owner)
	resp := askAs(t, path, stranger, `{"command":"status"}`)
	assert.False(t, resp.OK, "a uid that is neither the owner nor root is refused")
	assert.Contains(t, resp.Error, "uid 65534 is not allowed")
	assert.Nil(t, resp.Status)
	assert.True(t, askAs(t, path, owner, `{"command":"status"}`).OK, "the owner is answered")
	assert.True(t, askAs(t, path, 0, `{"command":"status"}`).OK, "root is answered")
}

// TestControlSocketIsStrict proves a request with a field the protocol
// does not have is refused (a misspelt "state" must not save somewhere
// else), and an over-long line is answered with an error, not dropped.
func TestControlSocketIsStrict(t *testing.T) {
	path := openControlServer(t, uint32(os.Geteuid()))
	me := os.Geteuid()
	resp := askAs(t, path, me, `{"command":"status","stat":"/tmp/x"}`)
	assert.False(t, resp.OK)
	assert.Contains(t, resp.Error, `unknown field "stat"`)
	resp = askAs(t, path, me, `{"command":"status"} {"command":"stop"}`)
	assert.False(t, resp.OK, "one JSON object per line")
	resp = askAs(t, path, me, `{"command":"status","state":"`+strings.Repeat("a", maxControlLine)+`"}`)
	assert.False(t, resp.OK)
	assert.Contains(t, resp.Error, "longer than")
	assert.True(t, askAs(t, path, me, `{"command":"status"}`).OK)
}
