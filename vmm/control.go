package vmm

import (
	"bufio"
	"encoding/json"
	"net"
	"time"

	"github.com/rs/zerolog"
)

// ControlRequest is one line a client sends on the control socket.
type ControlRequest struct {
	Command string `json:"command"` // "status" or "stop"
}

// ControlResponse is the one line pmvm answers.
type ControlResponse struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
}

// ControlServer serves the control socket: newline-delimited JSON, one
// request and one response per line.
type ControlServer struct {
	ln   net.Listener
	path string
}

// controlReadTimeout drops idle clients so they cannot pile up.
const controlReadTimeout = 30 * time.Second

// maxControlLine bounds a request line: the socket is an input like any other.
const maxControlLine = 64 << 10

// ServeControl listens on path (mode 0600) and answers for m.
func ServeControl(path string, m *Machine, log zerolog.Logger) (*ControlServer, error) {
	ln, err := listenUnix(path)
	if err != nil {
		return nil, err
	}
	s := &ControlServer{ln: ln, path: path}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c, m, log)
		}
	}()
	return s, nil
}

func (s *ControlServer) serve(c net.Conn, m *Machine, log zerolog.Logger) {
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
		} else {
			switch req.Command {
			case "status":
				st := m.Status()
				resp.OK, resp.Status = true, &st
			case "stop":
				log.Info().Msg("stop requested on the control socket")
				m.Stop()
				resp.OK = true
			default:
				resp.Error = "unknown command " + req.Command + ` (known: "status", "stop")`
			}
		}
		if err := enc.Encode(resp); err != nil {
			return
		}
	}
}

// Close stops serving and removes the socket file.
func (s *ControlServer) Close() error {
	err := s.ln.Close()
	removeSocket(s.path)
	return err
}
