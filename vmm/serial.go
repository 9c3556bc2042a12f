package vmm

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/vmm/devices/uart"
)

// SerialPort exposes a UART on a unix socket: one client at a time gets the
// guest's output and feeds its input. With no client, output is dropped.
type SerialPort struct {
	ln   net.Listener
	path string

	mu       sync.Mutex // guards conn and borrowed
	conn     net.Conn
	borrowed bool // pmvm itself holds the line; socket clients are turned away
	uart     *uart.UART
	log      zerolog.Logger
}

// writeTimeout bounds how long a vCPU may wait on a slow socket client:
// the guest must never hang on the host side of its serial line.
const writeTimeout = 100 * time.Millisecond

// ListenSerial creates the socket at path (mode 0600, parent 0700). A stale
// socket file left by a dead pmvm is replaced; any other file is refused.
func ListenSerial(path string) (*SerialPort, error) {
	ln, err := listenUnix(path)
	if err != nil {
		return nil, err
	}
	return &SerialPort{ln: ln, path: path}, nil
}

// listenUnix listens on a unix socket only its owner may use.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another path", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by a running process (another pmvm for this VM?)", path)
		}
		os.Remove(path)
	}
	// Bind under a temporary name, make it 0600, then rename it into
	// place: the socket is never reachable at path with the umask's mode.
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // the owner removes path
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("put socket in place at %s: %w", path, err)
	}
	return ln, nil
}

// attach starts bridging clients of the socket to u.
func (s *SerialPort) attach(u *uart.UART, log zerolog.Logger) {
	s.mu.Lock()
	s.uart, s.log = u, log
	s.mu.Unlock()
	go acceptLoop(s.ln, log, s.path, func(c net.Conn) { s.connect(c, u, log) })
}

// connect makes c the line's client, unless the machine is closed or pmvm
// holds the line.
func (s *SerialPort) connect(c net.Conn, u *uart.UART, log zerolog.Logger) {
	s.mu.Lock()
	if s.uart != u { // detached: the machine is closed
		s.mu.Unlock()
		c.Write([]byte("pmvm: this VM's machine is closed\n"))
		c.Close()
		return
	}
	if s.borrowed {
		s.mu.Unlock()
		c.Write([]byte("pmvm is using this line (guest agent operation in progress); try again later\n"))
		c.Close()
		return
	}
	if s.conn != nil {
		s.conn.Close() // the newest client wins, as with a real cable
	}
	s.conn = c
	s.mu.Unlock()
	log.Debug().Str("socket", s.path).Msg("serial client connected")
	go s.feed(c, u)
}

// detach disconnects the line from its UART at Machine.Close: the client
// is dropped and nothing more is fed to the UART. The socket stays, its
// owner closes it.
func (s *SerialPort) detach() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uart = nil
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// attachedTo says whether the line still feeds u.
func (s *SerialPort) attachedTo(u *uart.UART) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uart == u
}

// stallReport is how long the guest may leave the receive FIFO full before
// feed logs why (once per stall): a client then sees "not draining".
var stallReport = 5 * time.Second

// feed copies a client's bytes into the UART's receive FIFO, waiting for
// the guest to drain it rather than spinning, until the client leaves or
// the line is detached.
func (s *SerialPort) feed(c net.Conn, u *uart.UART) {
	buf := make([]byte, 256)
	s.mu.Lock()
	log := s.log
	s.mu.Unlock()
	for {
		n, err := c.Read(buf)
		p := buf[:n]
		if !s.attachedTo(u) {
			c.Close()
			return
		}
		progress, reported := time.Now(), false
		for len(p) > 0 {
			k := u.Receive(p)
			p = p[k:]
			if k > 0 {
				if reported {
					log.Info().Str("socket", s.path).Msg("guest is reading its serial line again")
				}
				progress, reported = time.Now(), false
			}
			if len(p) == 0 {
				break
			}
			if !reported && time.Since(progress) >= stallReport {
				reported = true
				log.Warn().Str("socket", s.path).Dur("for", time.Since(progress).Round(time.Second)).
					Str("uart", u.ReceiverStatus()).Msg("guest is not reading its serial line")
			}
			select {
			case <-u.SpaceAvailable():
			case <-time.After(50 * time.Millisecond):
			}
			if !s.attachedTo(u) {
				c.Close()
				return
			}
		}
		if err != nil {
			s.mu.Lock()
			if s.conn == c {
				s.conn = nil
			}
			s.mu.Unlock()
			c.Close()
			return
		}
	}
}

// Borrow gives pmvm itself the line (for the guest agent client): any socket
// client is disconnected and new ones are turned away until release. If
// another operation holds the line, Borrow waits for it until ctx ends.
func (s *SerialPort) Borrow(ctx context.Context) (conn net.Conn, release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uart == nil {
		return nil, nil, fmt.Errorf("serial line is not attached to a UART")
	}
	for s.borrowed {
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			s.mu.Lock()
			return nil, nil, fmt.Errorf("the agent line stayed busy with another operation: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		s.mu.Lock()
	}
	if s.conn != nil {
		s.conn.Close()
	}
	ours, theirs := net.Pipe()
	s.conn, s.borrowed = theirs, true
	go s.feed(theirs, s.uart)
	return ours, func() {
		ours.Close()
		s.mu.Lock()
		s.borrowed = false
		s.mu.Unlock()
	}, nil
}

// Write sends guest output to the connected client, if any.
func (s *SerialPort) Write(p []byte) (int, error) {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return len(p), nil
	}
	// A client that cannot keep up loses output, as on a real line with no
	// flow control; the guest is never blocked for longer than writeTimeout.
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	c.Write(p)
	return len(p), nil
}

// Close stops listening, drops the client and removes the socket file.
func (s *SerialPort) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	s.mu.Unlock()
	removeSocket(s.path)
	return err
}

// removeSocket deletes a socket file we created.
func removeSocket(path string) { os.Remove(path) }
