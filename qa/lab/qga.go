package lab

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"time"
)

// Agent is a test client of qemu-guest-agent's JSON protocol on a stream:
// the unix socket of a QEMU "-chardev socket,server=on" wired to the
// guest's isa-serial port (or pmvm's [agent] socket). One request at a time.
type Agent struct {
	conn net.Conn
	r    *bufio.Reader
}

// DialAgent connects to the agent socket, retrying until it exists or
// timeout passes. It does not talk to the agent yet (see Sync).
func DialAgent(path string, timeout time.Duration) (*Agent, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			return &Agent{conn: c, r: bufio.NewReader(c)}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("agent socket %s: %w", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Close closes the connection.
func (a *Agent) Close() error { return a.conn.Close() }

type agentRequest struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
}

// AgentError is an {"error": {...}} reply.
type AgentError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *AgentError) Error() string { return fmt.Sprintf("agent error %s: %s", e.Class, e.Desc) }

type agentReply struct {
	Return json.RawMessage `json:"return"`
	Error  *AgentError     `json:"error"`
}

func (a *Agent) send(cmd string, args any, prefix []byte) error {
	b, err := json.Marshal(agentRequest{Execute: cmd, Arguments: args})
	if err != nil {
		return err
	}
	a.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err = a.conn.Write(append(append(prefix, b...), '\n'))
	return err
}

// readReply reads one JSON reply line.
func (a *Agent) readReply(deadline time.Time) (*agentReply, error) {
	a.conn.SetReadDeadline(deadline)
	for {
		line, err := a.r.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		line = bytes.TrimSpace(bytes.TrimLeft(line, "\xff"))
		if len(line) == 0 {
			continue
		}
		var r agentReply
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("agent reply %q: %w", line, err)
		}
		return &r, nil
	}
}

// Sync resynchronizes with the agent (guest-sync-delimited): it sends
// 0xFF (which resets the agent's JSON parser), then the request with a
// random id, skips everything up to the agent's 0xFF delimiter and
// checks the id comes back. It retries every 3 s until timeout, so it also
// waits for an agent that is still starting.
func (a *Agent) Sync(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		id := rand.Int64N(1 << 40)
		if err := a.send("guest-sync-delimited", map[string]int64{"id": id}, []byte{0xff}); err != nil {
			return err
		}
		try := time.Now().Add(3 * time.Second)
		if try.After(deadline) {
			try = deadline
		}
		last = a.awaitSync(id, try)
		if last == nil {
			return nil
		}
	}
	return fmt.Errorf("no guest-sync-delimited answer within %v: %w", timeout, last)
}

func (a *Agent) awaitSync(id int64, deadline time.Time) error {
	a.conn.SetReadDeadline(deadline)
	for {
		if _, err := a.r.ReadBytes(0xff); err != nil {
			return err
		}
		r, err := a.readReply(deadline)
		if err != nil {
			return err
		}
		if r.Error != nil {
			return r.Error
		}
		var got int64
		if json.Unmarshal(r.Return, &got) == nil && got == id {
			return nil
		}
		// A stale answer to an earlier sync: keep reading.
	}
}

// Call executes cmd and returns its "return" value.
func (a *Agent) Call(cmd string, args any, timeout time.Duration) (json.RawMessage, error) {
	if err := a.send(cmd, args, nil); err != nil {
		return nil, err
	}
	r, err := a.readReply(time.Now().Add(timeout))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	if r.Error != nil {
		return nil, fmt.Errorf("%s: %w", cmd, r.Error)
	}
	return r.Return, nil
}

// Send executes cmd without waiting for a reply: guest-suspend-ram (and
// the other suspend and shutdown commands) send none when they succeed.
func (a *Agent) Send(cmd string, args any) error { return a.send(cmd, args, nil) }

// QMP is a minimal QEMU Machine Protocol client (query-status,
// system_wakeup, quit) for plain-QEMU runs of a guest image.
type QMP struct {
	conn net.Conn
	r    *bufio.Reader
}

// DialQMP connects to a "-qmp unix:PATH,server=on,wait=off" socket,
// reads the greeting and negotiates capabilities.
func DialQMP(path string, timeout time.Duration) (*QMP, error) {
	deadline := time.Now().Add(timeout)
	var c net.Conn
	var err error
	for {
		if c, err = net.Dial("unix", path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("QMP socket %s: %w", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	q := &QMP{conn: c, r: bufio.NewReader(c)}
	c.SetReadDeadline(deadline)
	if _, err := q.r.ReadBytes('\n'); err != nil { // {"QMP": {...}}
		c.Close()
		return nil, fmt.Errorf("QMP greeting: %w", err)
	}
	if _, err := q.Execute("qmp_capabilities", nil, 10*time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }

// Execute runs a command and returns its "return" value; events are skipped.
func (q *QMP) Execute(cmd string, args any, timeout time.Duration) (json.RawMessage, error) {
	b, err := json.Marshal(agentRequest{Execute: cmd, Arguments: args})
	if err != nil {
		return nil, err
	}
	q.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	q.conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("QMP %s: %w", cmd, err)
		}
		var r struct {
			agentReply
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("QMP %s: reply %q: %w", cmd, line, err)
		}
		switch {
		case r.Event != "":
			continue
		case r.Error != nil:
			return nil, fmt.Errorf("QMP %s: %w", cmd, r.Error)
		default:
			return r.Return, nil
		}
	}
}

// Status returns QEMU's run state ("running", "suspended", ...).
func (q *QMP) Status() (string, error) {
	ret, err := q.Execute("query-status", nil, 10*time.Second)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(ret, &st); err != nil {
		return "", err
	}
	return st.Status, nil
}

// WaitStatus polls Status until it is want or timeout passes.
func (q *QMP) WaitStatus(want string, timeout time.Duration) error {
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
