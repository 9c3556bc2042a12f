package qmp

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeQEMU serves QMP on a unix socket the way QEMU 7.2 does: a greeting,
// qmp_capabilities, and a few commands. Events are written before the
// reply of the command that causes them, as QEMU does for stop and cont.
type fakeQEMU struct {
	sock   string
	status string
	fds    chan int // descriptors received with getfd
}

func newFakeQEMU(t *testing.T, greeting string) *fakeQEMU {
	t.Helper()
	f := &fakeQEMU{sock: filepath.Join(t.TempDir(), "qmp.sock"), status: "running", fds: make(chan int, 4)}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: f.sock, Net: "unix"})
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		f.serve(c, greeting)
	}()
	return f
}

func (f *fakeQEMU) serve(c *net.UnixConn, greeting string) {
	fmt.Fprintf(c, "%s\n", greeting)
	negotiated := false
	for {
		// getfd carries its descriptor with the request's first byte.
		buf, oob := make([]byte, 4096), make([]byte, 64)
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		if oobn > 0 {
			if msgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if fds, err := syscall.ParseUnixRights(&m); err == nil {
						for _, fd := range fds {
							f.fds <- fd
						}
					}
				}
			}
		}
		r := bufio.NewReader(strings.NewReader(string(buf[:n])))
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				break
			}
			var req struct {
				Execute   string          `json:"execute"`
				Arguments json.RawMessage `json:"arguments"`
			}
			if err := json.Unmarshal(line, &req); err != nil {
				fmt.Fprint(c, `{"error": {"class": "GenericError", "desc": "JSON parse error"}}`+"\n")
				continue
			}
			switch {
			case req.Execute == "qmp_capabilities":
				negotiated = true
				fmt.Fprint(c, `{"return": {}}`+"\n")
			case !negotiated:
				fmt.Fprint(c, `{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`+"\n")
			case req.Execute == "query-status":
				fmt.Fprintf(c, `{"return": {"status": %q, "singlestep": false, "running": %v}}`+"\n", f.status, f.status == "running")
				if f.status == "suspended" {
					f.status = "running" // the next query sees the guest awake
				}
			case req.Execute == "stop":
				f.status = "paused"
				fmt.Fprint(c, `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}`+"\n")
				fmt.Fprint(c, `{"return": {}}`+"\n")
			case req.Execute == "system_powerdown":
				f.status = "suspended"
				fmt.Fprint(c, `{"return": {}}`+"\n")
			case req.Execute == "migrate":
				fmt.Fprint(c, `{"return": {}}`+"\n")
				for _, s := range []string{"setup", "active", "completed"} {
					fmt.Fprintf(c, `{"event": "MIGRATION", "data": {"status": %q}}`+"\n", s)
				}
			case req.Execute == "getfd":
				fmt.Fprint(c, `{"return": {}}`+"\n")
			case req.Execute == "silent":
				// never answers
			default:
				fmt.Fprintf(c, `{"error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}}`+"\n", req.Execute)
			}
		}
	}
}

const greeting = `{"QMP": {"version": {"qemu": {"micro": 19, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u6"}, "capabilities": ["oob"]}}`

func TestDialNegotiatesAndExecutes(t *testing.T) {
	f := newFakeQEMU(t, greeting)
	q, err := Dial(f.sock, time.Second)
	require.NoError(t, err)
	defer q.Close()

	st, err := q.Status()
	require.NoError(t, err)
	require.Equal(t, "running", st)

	_, err = q.Execute("stop", nil, time.Second)
	require.NoError(t, err, "the STOP event before the reply must not be taken for the reply")
	ev, err := q.WaitEvent("STOP", nil, time.Second)
	require.NoError(t, err)
	require.Equal(t, "STOP", ev.Name)
	st, err = q.Status()
	require.NoError(t, err)
	require.Equal(t, "paused", st)

	_, err = q.Execute("bogus", map[string]any{"x": 1}, time.Second)
	var qe *Error
	require.ErrorAs(t, err, &qe)
	require.Equal(t, "CommandNotFound", qe.Class)
	require.Contains(t, err.Error(), "QMP bogus")
}

func TestWaitStatus(t *testing.T) {
	f := newFakeQEMU(t, greeting)
	q, err := Dial(f.sock, time.Second)
	require.NoError(t, err)
	defer q.Close()
	_, err = q.Execute("system_powerdown", nil, time.Second) // the fake's way into "suspended"
	require.NoError(t, err)
	require.NoError(t, q.WaitStatus("suspended", time.Second))
	err = q.WaitStatus("shutdown", 500*time.Millisecond)
	require.ErrorContains(t, err, `still "running"`)
}

func TestWaitMigration(t *testing.T) {
	f := newFakeQEMU(t, greeting)
	q, err := Dial(f.sock, time.Second)
	require.NoError(t, err)
	defer q.Close()
	_, err = q.Execute("migrate", map[string]any{"uri": "fd:state"}, time.Second)
	require.NoError(t, err)
	ev, err := q.WaitMigration(time.Second)
	require.NoError(t, err)
	require.JSONEq(t, `{"status": "completed"}`, string(ev.Data))
}

func TestSendFilePassesTheDescriptor(t *testing.T) {
	f := newFakeQEMU(t, greeting)
	q, err := Dial(f.sock, time.Second)
	require.NoError(t, err)
	defer q.Close()
	tmp, err := os.CreateTemp(t.TempDir(), "state")
	require.NoError(t, err)
	defer tmp.Close()
	require.NoError(t, q.SendFile("state", tmp))
	select {
	case fd := <-f.fds:
		var a, b syscall.Stat_t
		require.NoError(t, syscall.Fstat(fd, &a))
		require.NoError(t, syscall.Fstat(int(tmp.Fd()), &b))
		require.Equal(t, b.Ino, a.Ino, "QEMU got another file than the one sent")
		syscall.Close(fd)
	case <-time.After(time.Second):
		t.Fatal("getfd reached QEMU without a descriptor")
	}
	require.Error(t, q.SendFile("state", nil))
}

func TestNoReplyTimesOut(t *testing.T) {
	f := newFakeQEMU(t, greeting)
	q, err := Dial(f.sock, time.Second)
	require.NoError(t, err)
	defer q.Close()
	_, err = q.Execute("silent", nil, 200*time.Millisecond)
	require.ErrorContains(t, err, "no reply within")
}

func TestConnectionLost(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%s\n", greeting)
		bufio.NewReader(c).ReadBytes('\n') // qmp_capabilities: QEMU dies instead of answering
		c.Close()
	}()
	_, err = Dial(sock, time.Second)
	require.ErrorContains(t, err, "connection lost")
}

func TestNotAGreeting(t *testing.T) {
	f := newFakeQEMU(t, `{"return": {}}`)
	_, err := Dial(f.sock, time.Second)
	require.ErrorContains(t, err, "is not a greeting")
}

func TestDialWaitsForTheSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "late.sock")
	_, err := Dial(sock, 300*time.Millisecond)
	require.ErrorContains(t, err, "late.sock")
	require.True(t, errors.Is(err, syscall.ENOENT), "got %v", err)

	go func() {
		time.Sleep(300 * time.Millisecond)
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			return
		}
		defer ln.Close()
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		(&fakeQEMU{status: "running", fds: make(chan int, 1)}).serve(c, greeting)
	}()
	q, err := Dial(sock, 5*time.Second)
	require.NoError(t, err)
	q.Close()
}
