package guestpm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// agentConfig selects how fakeAgent misbehaves. The zero value is a healthy
// qga that answers at once.
type agentConfig struct {
	BootJunk       []byte        // written on the line as soon as the agent starts
	Silent         bool          // reads every request, answers nothing
	NoRead         bool          // never reads the line (a wedged UART)
	Delay          time.Duration // before every answer
	SyncJunk       []byte        // written before the 0xFF of every sync answer
	StaleSyncFirst bool          // answer a stale sync id (0xFF-prefixed) before the right one
	FlushError     bool          // answer each 0xFF flush with a parse error, as qga may
	LoseSyncs      int           // the answers to the first LoseSyncs syncs are lost on the line
	SuspendErr     *Error        // guest-suspend-ram answers this; nil: no answer (success)
	SuspendDelay   time.Duration // before the SuspendErr answer
	// Hook, if set, sees each request first; it returns true if it answered.
	Hook func(a *fakeAgent, n int, req agentRequest) bool
}

type agentRequest struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
}

// fakeAgent plays qemu-guest-agent on the guest end of a net.Pipe: it flushes
// its parser on 0xFF, parses newline-terminated requests and answers them as
// qga does (0xFF before a guest-sync-delimited answer, nothing for a
// successful guest-suspend-ram).
type fakeAgent struct {
	conn net.Conn
	cfg  agentConfig
	done chan struct{}

	mu       sync.Mutex
	reqs     []agentRequest
	raw      []byte // every byte received
	timeNs   int64  // the guest clock for guest-get-time
	setTimes []json.RawMessage
}

const fakeTime = int64(1_700_000_000_123_456_789)

func newFakeAgent(conn net.Conn, cfg agentConfig) *fakeAgent {
	a := &fakeAgent{conn: conn, cfg: cfg, done: make(chan struct{}), timeNs: fakeTime}
	go a.run()
	return a
}

func (a *fakeAgent) send(b []byte) {
	if len(b) == 0 {
		return
	}
	_, _ = a.conn.Write(b)
}

func (a *fakeAgent) reply(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	a.send(append(b, '\n'))
}

func (a *fakeAgent) run() {
	defer close(a.done)
	if len(a.cfg.BootJunk) > 0 {
		a.send(a.cfg.BootJunk)
	}
	if a.cfg.NoRead {
		return // the test closes the conn
	}
	var line []byte
	buf := make([]byte, 1024)
	n := 0
	for {
		k, err := a.conn.Read(buf)
		a.mu.Lock()
		a.raw = append(a.raw, buf[:k]...)
		a.mu.Unlock()
		for _, b := range buf[:k] {
			switch {
			case b == 0xFF:
				line = line[:0]
				if a.cfg.FlushError && !a.cfg.Silent {
					a.reply(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "JSON parse error, invalid UTF-8 sequence"}})
				}
			case b == '\n':
				if len(bytes.TrimSpace(line)) > 0 {
					var req agentRequest
					if err := json.Unmarshal(line, &req); err != nil {
						if !a.cfg.Silent {
							a.reply(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "JSON parse error"}})
						}
					} else {
						a.mu.Lock()
						a.reqs = append(a.reqs, req)
						a.mu.Unlock()
						a.handle(n, req)
						n++
					}
				}
				line = line[:0]
			default:
				line = append(line, b)
			}
		}
		if err != nil {
			return
		}
	}
}

func (a *fakeAgent) handle(n int, req agentRequest) {
	if a.cfg.Hook != nil && a.cfg.Hook(a, n, req) {
		return
	}
	if a.cfg.Silent {
		return
	}
	if a.cfg.Delay > 0 {
		time.Sleep(a.cfg.Delay)
	}
	switch req.Execute {
	case "guest-sync-delimited":
		var args struct {
			ID int64 `json:"id"`
		}
		_ = json.Unmarshal(req.Arguments, &args)
		if a.cfg.LoseSyncs > 0 {
			a.cfg.LoseSyncs--
			return
		}
		if a.cfg.StaleSyncFirst {
			a.send(fmt.Appendf([]byte{0xFF}, `{"return": %d}`+"\n", args.ID^0x5a5a))
		}
		a.send(a.cfg.SyncJunk)
		a.send(fmt.Appendf([]byte{0xFF}, `{"return": %d}`+"\n", args.ID))
	case "guest-ping":
		a.send([]byte(`{"return": {}}` + "\n"))
	case "guest-info":
		a.send([]byte(`{"return": {"version": "8.2.2", "supported_commands": [` +
			`{"enabled": true, "name": "guest-suspend-ram", "success-response": false}, ` +
			`{"enabled": false, "name": "guest-exec", "success-response": true}, ` +
			`{"enabled": true, "name": "guest-ping", "success-response": true}]}}` + "\n"))
	case "guest-get-time":
		a.mu.Lock()
		ns := a.timeNs
		a.mu.Unlock()
		a.send(fmt.Appendf(nil, `{"return": %d}`+"\n", ns))
	case "guest-set-time":
		a.mu.Lock()
		a.setTimes = append(a.setTimes, req.Arguments)
		var args struct {
			Time *int64 `json:"time"`
		}
		if json.Unmarshal(req.Arguments, &args) == nil && args.Time != nil {
			a.timeNs = *args.Time
		}
		a.mu.Unlock()
		a.send([]byte(`{"return": {}}` + "\n"))
	case "guest-suspend-ram":
		if a.cfg.SuspendErr != nil {
			time.Sleep(a.cfg.SuspendDelay)
			a.reply(map[string]any{"error": map[string]string{"class": a.cfg.SuspendErr.Class, "desc": a.cfg.SuspendErr.Desc}})
		}
		// success: no answer, the guest goes to sleep
	default:
		a.reply(map[string]any{"error": map[string]string{"class": "CommandNotFound",
			"desc": fmt.Sprintf("The command %s has not been found", req.Execute)}})
	}
}

// requests returns the commands the agent parsed so far.
func (a *fakeAgent) requests() []agentRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]agentRequest(nil), a.reqs...)
}

// count returns how many requests of cmd the agent parsed.
func (a *fakeAgent) count(cmd string) int {
	n := 0
	for _, r := range a.requests() {
		if r.Execute == cmd {
			n++
		}
	}
	return n
}

// testOptions are fast defaults for tests.
func testOptions(t *testing.T) Options {
	return Options{
		Timeout:      2 * time.Second,
		SuspendGrace: 50 * time.Millisecond,
		Log:          zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel),
	}
}

// startAgent connects a Client to a fakeAgent over a net.Pipe and tears both
// down, waiting for every goroutine, when the test ends.
func startAgent(t *testing.T, cfg agentConfig, opts Options) (*Client, *fakeAgent) {
	t.Helper()
	host, guest := net.Pipe()
	a := newFakeAgent(guest, cfg)
	c := New(host, opts)
	t.Cleanup(func() {
		c.Close()
		guest.Close()
		<-c.readerDone
		<-a.done
	})
	return c, a
}
