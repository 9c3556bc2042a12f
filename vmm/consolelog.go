package vmm

import (
	"fmt"
	"os"
	"sync"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/configs"
)

// ConsoleLog is a guest console written to a file that cannot grow without
// bound, as logrotate would keep it: when the next write would take it
// past its maximum, the file is moved to <path>.1 (replacing the one
// before) and a new one is started. The newest output is always kept, and
// the console never takes more than twice the maximum on the disk it
// shares with state_dir.
type ConsoleLog struct {
	path string
	max  int64
	log  zerolog.Logger

	mu   sync.Mutex // guards f and size
	f    *os.File   // nil once a rotation failed: output is dropped
	size int64
}

// OpenConsoleLog opens (appends to) the console log at path, rotated at
// max bytes (configs.DefaultConsoleMaxSize if max <= 0).
func OpenConsoleLog(path string, max int64, log zerolog.Logger) (*ConsoleLog, error) {
	if max <= 0 {
		max = configs.DefaultConsoleMaxSize
	}
	c := &ConsoleLog{path: path, max: max, log: log}
	if err := c.openLocked(); err != nil {
		return nil, fmt.Errorf("console file: %w", err)
	}
	return c, nil
}

func (c *ConsoleLog) openLocked() error {
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	c.f, c.size = f, fi.Size()
	return nil
}

// Write appends p, rotating the file first if p would take it past its
// maximum. Output is never held back from the guest: after a failed
// rotation (logged once) it is dropped.
func (c *ConsoleLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return len(p), nil
	}
	if c.size > 0 && c.size+int64(len(p)) > c.max {
		if err := c.rotateLocked(); err != nil {
			c.log.Error().Err(err).Str("console", c.path).Msg("console log could not be rotated: the guest's console output is dropped from now on")
			return len(p), nil
		}
	}
	n, err := c.f.Write(p)
	c.size += int64(n)
	return n, err
}

func (c *ConsoleLog) rotateLocked() error {
	old := c.size
	err := c.f.Close()
	c.f = nil
	if err != nil {
		return err
	}
	if err := os.Rename(c.path, c.path+".1"); err != nil {
		return err
	}
	if err := c.openLocked(); err != nil {
		return err
	}
	c.log.Info().Str("console", c.path).Int64("bytes", old).Str("rotated_to", c.path+".1").
		Msgf("console log reached its maximum (%d bytes): moved to %s, replacing the previous one; writing a new one", c.max, c.path+".1")
	return nil
}

// Close closes the file.
func (c *ConsoleLog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}
