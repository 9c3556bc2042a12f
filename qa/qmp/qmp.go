// Package qmp is the tests' one client of QEMU's monitor (the QEMU
// Machine Protocol): qa/bench drives the QEMU it compares pmvm with through
// it, and the lab's plain-QEMU runs wake and query their guests with it.
package qmp

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Client is a small client of the QEMU Machine Protocol on a unix socket:
// commands one at a time, descriptors passed with SCM_RIGHTS (getfd), and
// events kept in order for WaitEvent.
type Client struct {
	conn *net.UnixConn

	cmdMu   sync.Mutex // one command in flight
	replies chan qmpMessage
	events  chan Event

	done    chan struct{} // closed when the reader stops
	readErr error         // why it stopped; read after done
}

// Event is one asynchronous QMP event.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
	At   time.Time       `json:"-"` // when the client read it
}

// Error is an error reply.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return e.Class + ": " + e.Desc }

type qmpMessage struct {
	Greeting json.RawMessage `json:"QMP"`
	Return   json.RawMessage `json:"return"`
	Error    *Error          `json:"error"`
	Event    string          `json:"event"`
	Data     json.RawMessage `json:"data"`
}

// eventBacklog is how many unread events are kept; more are dropped.
const eventBacklog = 4096

// New reads QEMU's greeting on conn and negotiates capabilities
// (qmp_capabilities), which QEMU answers once its main loop runs. It owns
// conn from then on.
func New(conn *net.UnixConn, timeout time.Duration) (*Client, error) {
	q := &Client{conn: conn, replies: make(chan qmpMessage, 1), events: make(chan Event, eventBacklog), done: make(chan struct{})}
	r := bufio.NewReaderSize(conn, 64<<10)
	conn.SetReadDeadline(time.Now().Add(timeout))
	line, err := r.ReadBytes('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("QMP greeting: %w", err)
	}
	var g qmpMessage
	if err := json.Unmarshal(line, &g); err != nil || g.Greeting == nil {
		conn.Close()
		return nil, fmt.Errorf("QMP greeting %q is not a greeting", line)
	}
	conn.SetReadDeadline(time.Time{})
	go q.read(r)
	if _, err := q.Execute("qmp_capabilities", nil, timeout); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

func (q *Client) read(r *bufio.Reader) {
	defer close(q.done)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			q.readErr = err
			return
		}
		var m qmpMessage
		if err := json.Unmarshal(line, &m); err != nil {
			q.readErr = fmt.Errorf("QMP message %q: %w", line, err)
			return
		}
		if m.Event != "" {
			select {
			case q.events <- Event{Name: m.Event, Data: m.Data, At: time.Now()}:
			default: // backlog full: nobody waits for these
			}
			continue
		}
		q.replies <- m
	}
}

// Close closes the connection.
func (q *Client) Close() error { return q.conn.Close() }

// Execute runs cmd with args (nil for none) and returns its "return" value.
func (q *Client) Execute(cmd string, args any, timeout time.Duration) (json.RawMessage, error) {
	return q.execute(cmd, args, -1, timeout)
}

// ExecuteFD runs cmd with the descriptor fd attached (SCM_RIGHTS), as
// getfd and add-fd want.
func (q *Client) ExecuteFD(cmd string, args any, fd int, timeout time.Duration) (json.RawMessage, error) {
	return q.execute(cmd, args, fd, timeout)
}

func (q *Client) execute(cmd string, args any, fd int, timeout time.Duration) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	q.cmdMu.Lock()
	defer q.cmdMu.Unlock()
	q.conn.SetWriteDeadline(time.Now().Add(timeout))
	if fd >= 0 {
		n, _, err := q.conn.WriteMsgUnix(b, syscall.UnixRights(fd), nil)
		if err == nil && n != len(b) {
			err = fmt.Errorf("short write (%d of %d bytes)", n, len(b))
		}
		if err != nil {
			return nil, fmt.Errorf("QMP %s: %w", cmd, err)
		}
	} else if _, err := q.conn.Write(b); err != nil {
		return nil, fmt.Errorf("QMP %s: %w", cmd, err)
	}
	select {
	case m := <-q.replies:
		if m.Error != nil {
			return nil, fmt.Errorf("QMP %s: %w", cmd, m.Error)
		}
		return m.Return, nil
	case <-q.done:
		return nil, fmt.Errorf("QMP %s: connection lost: %v", cmd, q.readErr)
	case <-time.After(timeout):
		return nil, fmt.Errorf("QMP %s: no reply within %s", cmd, timeout)
	}
}

// WaitEvent reads events until one named name for which match (nil: any)
// is true, discarding the others; an event named in fail ends the wait
// with an error.
func (q *Client) WaitEvent(name string, match func(data json.RawMessage) bool, timeout time.Duration) (Event, error) {
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-q.events:
			if ev.Name == name && (match == nil || match(ev.Data)) {
				return ev, nil
			}
		case <-q.done:
			return Event{}, fmt.Errorf("QMP: connection lost waiting for %s: %v", name, q.readErr)
		case <-deadline:
			return Event{}, fmt.Errorf("QMP: no %s event within %s", name, timeout)
		}
	}
}

// WaitMigration waits for the MIGRATION event that ends a migration and
// returns an error unless it completed.
func (q *Client) WaitMigration(timeout time.Duration) (Event, error) {
	var status string
	ev, err := q.WaitEvent("MIGRATION", func(d json.RawMessage) bool {
		var s struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(d, &s) != nil {
			return false
		}
		status = s.Status
		return status == "completed" || status == "failed" || status == "cancelled"
	}, timeout)
	if err != nil {
		return ev, err
	}
	if status != "completed" {
		return ev, fmt.Errorf("migration %s%s", status, q.migrationError())
	}
	return ev, nil
}

func (q *Client) migrationError() string {
	ret, err := q.Execute("query-migrate", nil, 5*time.Second)
	if err != nil {
		return ""
	}
	var m struct {
		Desc string `json:"error-desc"`
	}
	if json.Unmarshal(ret, &m) != nil || m.Desc == "" {
		return ""
	}
	return ": " + m.Desc
}

// Status is QEMU's runstate (query-status).
func (q *Client) Status() (string, error) {
	ret, err := q.Execute("query-status", nil, 5*time.Second)
	if err != nil {
		return "", err
	}
	var s struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(ret, &s); err != nil {
		return "", err
	}
	return s.Status, nil
}

// SendFile hands f to QEMU under name (getfd), for an fd: migration URI.
func (q *Client) SendFile(name string, f *os.File) error {
	if f == nil {
		return errors.New("SendFile: nil file")
	}
	_, err := q.ExecuteFD("getfd", map[string]any{"fdname": name}, int(f.Fd()), 5*time.Second)
	return err
}

// Dial connects to the QMP socket of a QEMU started with
// "-qmp unix:PATH,server=on,wait=off", retrying until the socket exists
// or timeout passes (QEMU creates it while it starts), then reads the
// greeting and negotiates capabilities as New does.
func Dial(path string, timeout time.Duration) (*Client, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			return New(c, 10*time.Second)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("QMP socket %s: %w (is QEMU running with -qmp unix:%s,server=on?)", path, err, path)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitStatus polls Status until it is want or timeout passes.
func (q *Client) WaitStatus(want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := q.Status()
		if err != nil {
			return err
		}
		if st == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("QEMU run state still %q after %v, want %q", st, timeout, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
