package vmm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/vmm/timeline"
)

// ControlRequest is one line a client sends on the control socket.
type ControlRequest struct {
	Command string `json:"command"`              // "status", "stop", "wakeup", or one added by the caller ("suspend")
	Timeout int64  `json:"timeout_ms,omitempty"` // for commands that wait
	State   string `json:"state,omitempty"`      // "save": where to write the state file
}

// ControlResponse is the one line pmvm answers.
type ControlResponse struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
	// Took is how long the command took, for timelines.
	Took     time.Duration      `json:"took_ns,omitempty"`
	Timeline *timeline.Timeline `json:"timeline,omitempty"`

	// After runs once the response is on the wire (e.g. to exit after a save).
	After func() `json:"-"`
}

// CommandFunc handles one control command.
type CommandFunc func(ctx context.Context, req ControlRequest) ControlResponse

// ControlServer serves the control socket: newline-delimited JSON, one
// request and one response per line.
type ControlServer struct {
	ln       net.Listener
	path     string
	commands map[string]CommandFunc
}

// controlReadTimeout drops idle clients so they cannot pile up.
const controlReadTimeout = 30 * time.Second

// maxControlLine bounds a request line: the socket is an input like any other.
const maxControlLine = 64 << 10

// maxControlConns bounds the control connections served at once, and so
// the descriptors clients can make pmvm hold; idle ones are dropped after
// controlReadTimeout.
const maxControlConns = 16

// maxCommandTimeout caps the timeout a client may ask for.
const maxCommandTimeout = 10 * time.Minute

// ServeControl listens on path (mode 0600) and answers for m. extra adds
// commands implemented outside this package (the guest agent's "suspend").
func ServeControl(path string, m *Machine, log zerolog.Logger, extra map[string]CommandFunc) (*ControlServer, error) {
	ln, err := listenUnix(path)
	if err != nil {
		return nil, err
	}
	return serveControlOn(ln, path, m, log, extra), nil
}

// serveControlOn serves the control socket listening as ln at path.
func serveControlOn(ln net.Listener, path string, m *Machine, log zerolog.Logger, extra map[string]CommandFunc) *ControlServer {
	s := &ControlServer{ln: ln, path: path, commands: map[string]CommandFunc{
		"status": func(context.Context, ControlRequest) ControlResponse {
			st := m.Status()
			return ControlResponse{OK: true, Status: &st}
		},
		"stop": func(context.Context, ControlRequest) ControlResponse {
			log.Info().Msg("stop requested on the control socket")
			m.Stop()
			return ControlResponse{OK: true}
		},
		"wakeup": func(context.Context, ControlRequest) ControlResponse {
			if err := m.Wake("operator"); err != nil {
				return ControlResponse{Error: err.Error()}
			}
			st := m.Status()
			return ControlResponse{OK: true, Status: &st}
		},
	}}
	for name, f := range extra {
		s.commands[name] = f
	}
	slots := make(chan struct{}, maxControlConns)
	go acceptLoop(ln, log, path, func(c net.Conn) {
		select {
		case slots <- struct{}{}:
			go func() {
				defer func() { <-slots }()
				s.serve(c)
			}()
		default:
			go refuseBusy(c)
		}
	})
	return s
}

// refuseBusy answers a connection beyond maxControlConns with an error
// line and closes it.
func refuseBusy(c net.Conn) {
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(time.Second))
	json.NewEncoder(c).Encode(ControlResponse{Error: fmt.Sprintf("too many control connections (%d open): close idle ones and try again", maxControlConns)})
}

func (s *ControlServer) serve(c net.Conn) {
	defer c.Close()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), maxControlLine)
	enc := json.NewEncoder(c)
	for {
		c.SetReadDeadline(time.Now().Add(controlReadTimeout))
		if !sc.Scan() {
			return
		}
		var req ControlRequest
		var resp ControlResponse
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			resp.Error = "request is not JSON: " + err.Error()
		} else if f, ok := s.commands[req.Command]; !ok {
			resp.Error = fmt.Sprintf("unknown command %q (known: %s)", req.Command, s.names())
		} else {
			timeout := time.Duration(req.Timeout) * time.Millisecond
			if timeout <= 0 || timeout > maxCommandTimeout {
				timeout = maxCommandTimeout
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			start := time.Now()
			resp = f(ctx, req)
			resp.Took = time.Since(start)
			cancel()
		}
		c.SetWriteDeadline(time.Now().Add(controlReadTimeout))
		err := enc.Encode(resp)
		if resp.After != nil {
			resp.After()
		}
		if err != nil {
			return
		}
	}
}

func (s *ControlServer) names() string {
	out := ""
	for _, n := range []string{"status", "suspend", "wakeup", "save", "stop"} {
		if _, ok := s.commands[n]; ok {
			if out != "" {
				out += ", "
			}
			out += n
		}
	}
	return out
}

// Close stops serving and removes the socket file.
func (s *ControlServer) Close() error {
	err := s.ln.Close()
	removeSocket(s.path)
	return err
}

// CallControl sends one request to the control socket at path and returns
// the answer. The connection deadline is the request's timeout plus slack.
func CallControl(path string, req ControlRequest) (ControlResponse, error) {
	var resp ControlResponse
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return resp, fmt.Errorf("cannot reach pmvm at %s: %w (is the VM running?)", path, err)
	}
	defer c.Close()
	wait := time.Duration(req.Timeout)*time.Millisecond + 10*time.Second
	if req.Timeout <= 0 {
		wait = maxCommandTimeout
	}
	c.SetDeadline(time.Now().Add(wait))
	line, err := json.Marshal(req)
	if err != nil {
		return resp, err
	}
	if _, err := c.Write(append(line, '\n')); err != nil {
		return resp, fmt.Errorf("send to %s: %w", path, err)
	}
	r := bufio.NewReader(c)
	answer, err := r.ReadBytes('\n')
	if err != nil {
		return resp, fmt.Errorf("no answer from %s: %w", path, err)
	}
	if err := json.Unmarshal(answer, &resp); err != nil {
		return resp, fmt.Errorf("bad answer from %s: %w", path, err)
	}
	return resp, nil
}

// WaitControlGone waits up to wait for the control socket file at path to
// vanish after a command that ends pmvm ("save", "stop"). pmvm removes it
// last, once its agent socket, memory locks and devices are released, so a
// pmvm started after it is gone finds them free.
func WaitControlGone(path string, wait time.Duration) bool {
	for deadline := time.Now().Add(wait); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
