package bench

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

// QMP is a small client of the QEMU Machine Protocol on a unix socket:
// commands one at a time, descriptors passed with SCM_RIGHTS (getfd), and
// events kept in order for WaitEvent.
type QMP struct {
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

// QMPError is an error reply.
type QMPError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *QMPError) Error() string { return e.Class + ": " + e.Desc }

type qmpMessage struct {
	Greeting json.RawMessage `json:"QMP"`
	Return   json.RawMessage `json:"return"`
	Error    *QMPError       `json:"error"`
	Event    string          `json:"event"`
	Data     json.RawMessage `json:"data"`
}

// eventBacklog is how many unread events are kept; more are dropped.
const eventBacklog = 4096

// NewQMP reads QEMU's greeting on conn and negotiates capabilities
// (qmp_capabilities), which QEMU answers once its main loop runs. It owns
// conn from then on.
func NewQMP(conn *net.UnixConn, timeout time.Duration) (*QMP, error) {
	q := &QMP{conn: conn, replies: make(chan qmpMessage, 1), events: make(chan Event, eventBacklog), done: make(chan struct{})}
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

func (q *QMP) read(r *bufio.Reader) {
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
func (q *QMP) Close() error { return q.conn.Close() }

// Execute runs cmd with args (nil for none) and returns its "return" value.
func (q *QMP) Execute(cmd string, args any, timeout time.Duration) (json.RawMessage, error) {
	return q.execute(cmd, args, -1, timeout)
}

// ExecuteFD runs cmd with the descriptor fd attached (SCM_RIGHTS), as
// getfd and add-fd want.
func (q *QMP) ExecuteFD(cmd string, args any, fd int, timeout time.Duration) (json.RawMessage, error) {
	return q.execute(cmd, args, fd, timeout)
}

func (q *QMP) execute(cmd string, args any, fd int, timeout time.Duration) (json.RawMessage, error) {
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
func (q *QMP) WaitEvent(name string, match func(data json.RawMessage) bool, timeout time.Duration) (Event, error) {
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
func (q *QMP) WaitMigration(timeout time.Duration) (Event, error) {
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

func (q *QMP) migrationError() string {
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
func (q *QMP) Status() (string, error) {
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
func (q *QMP) SendFile(name string, f *os.File) error {
	if f == nil {
		return errors.New("SendFile: nil file")
	}
	_, err := q.ExecuteFD("getfd", map[string]any{"fdname": name}, int(f.Fd()), 5*time.Second)
	return err
}
