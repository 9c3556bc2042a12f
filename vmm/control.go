package vmm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

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
	owner    uint32 // the uid answered besides root: the one pmvm runs as
	log      zerolog.Logger
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
	return serveControlOn(ln, path, uint32(os.Getuid()), m, log, extra), nil
}

// serveControlOn serves the control socket listening as ln at path, to
// uid owner and root.
func serveControlOn(ln net.Listener, path string, owner uint32, m *Machine, log zerolog.Logger, extra map[string]CommandFunc) *ControlServer {
	s := &ControlServer{ln: ln, path: path, owner: owner, log: log, commands: map[string]CommandFunc{
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
	enc := json.NewEncoder(c)
	answer := func(resp ControlResponse) error {
		c.SetWriteDeadline(time.Now().Add(controlReadTimeout))
		return enc.Encode(resp)
	}
	if err := s.checkPeer(c); err != nil {
		s.log.Warn().Err(err).Str("socket", s.path).Msg("control connection refused")
		answer(ControlResponse{Error: err.Error()})
		return
	}
	r := bufio.NewReaderSize(c, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(controlReadTimeout))
		line, err := readLine(r, maxControlLine)
		if errors.Is(err, errLineTooLong) {
			answer(ControlResponse{Error: fmt.Sprintf("request line longer than %d bytes: send one JSON object per line; closing the connection", maxControlLine)})
			return
		}
		if err != nil {
			return
		}
		var resp ControlResponse
		if req, err := decodeRequest(line); err != nil {
			resp.Error = err.Error()
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
		err = answer(resp)
		if resp.After != nil {
			resp.After()
		}
		if err != nil {
			return
		}
	}
}

// checkPeer lets in only the socket's owner (the uid pmvm runs as) and
// root, by the credentials the kernel recorded at connect (SO_PEERCRED):
// the socket file's mode is a first gate, not the only one.
func (s *ControlServer) checkPeer(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("control connection is not a unix socket (%T): refused", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return fmt.Errorf("cannot read the peer's credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("cannot read the peer's credentials: %w", err)
	}
	if credErr != nil {
		return fmt.Errorf("cannot read the peer's credentials (SO_PEERCRED): %w", credErr)
	}
	if cred.Uid != s.owner && cred.Uid != 0 {
		return fmt.Errorf("uid %d is not allowed on this control socket (pid %d): only uid %d, which runs this pmvm, and root are", cred.Uid, cred.Pid, s.owner)
	}
	return nil
}

// errLineTooLong: a request line beyond maxControlLine.
var errLineTooLong = errors.New("line too long")

// readLine reads one line of at most max bytes (without its "\n" or
// "\r\n"); a last line without a newline counts. Beyond max it stops
// reading and returns errLineTooLong.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > max+1 { // +1: the newline
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r")), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return bytes.TrimSuffix(line, []byte("\r")), nil
		default:
			return nil, err
		}
	}
}

// decodeRequest reads one request strictly: one JSON object whose fields
// are all ControlRequest's (a misspelt field must not be ignored).
func decodeRequest(line []byte) (ControlRequest, error) {
	var req ControlRequest
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("request is not JSON for a control request: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, errors.New("request is not one JSON object: send one object per line")
	}
	return req, nil
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
