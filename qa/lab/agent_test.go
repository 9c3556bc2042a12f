package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/pmvm/pmvm/guestpm"
	"github.com/stretchr/testify/require"
)

// fakeAgent serves the qemu-guest-agent protocol the way qga does on a
// serial line: it ignores the first sync (an agent still starting), puts
// line noise before the 0xFF delimiter, answers guest-ping and errors.
func fakeAgent(t *testing.T) string {
	sock := filepath.Join(t.TempDir(), "qga.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		syncs := 0
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			for len(line) > 0 && line[0] == 0xff {
				line = line[1:]
			}
			var req struct {
				Execute   string          `json:"execute"`
				Arguments json.RawMessage `json:"arguments"`
			}
			if json.Unmarshal(line, &req) != nil {
				continue
			}
			switch req.Execute {
			case "guest-sync-delimited":
				syncs++
				if syncs == 1 {
					continue
				}
				var a struct{ ID int64 }
				json.Unmarshal(req.Arguments, &a)
				fmt.Fprintf(c, "{\"return\": 1}\nnoise\xff{\"return\": %d}\n", a.ID)
			case "guest-ping":
				fmt.Fprint(c, "{\"return\": {}}\n")
			case "guest-info":
				fmt.Fprint(c, "{\"return\": {\"version\": \"7.2.19\", \"supported_commands\": [{\"name\": \"guest-suspend-ram\", \"enabled\": true, \"success-response\": false}]}}\n")
			case "guest-suspend-ram":
				// no reply on success
			default:
				fmt.Fprintf(c, "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command %s has not been found\"}}\n", req.Execute)
			}
		}
	}()
	return sock
}

// TestDialAgent: the lab's agent connection is guestpm's client, and it
// copes with qga's ways on a serial line.
func TestDialAgent(t *testing.T) {
	a, err := DialAgent(fakeAgent(t), time.Second)
	require.NoError(t, err)
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	require.NoError(t, a.Sync(ctx))
	require.GreaterOrEqual(t, time.Since(t0), guestpm.DefaultSyncRetry, "the first sync was ignored: the client must have sent another")
	require.NoError(t, a.Ping(ctx))
	info, err := a.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, "7.2.19", info.Version)
	require.True(t, info.Supports("guest-suspend-ram"))
	_, err = a.GetTime(ctx)
	var ae *guestpm.Error
	require.ErrorAs(t, err, &ae)
	require.Equal(t, "CommandNotFound", ae.Class)
	require.NoError(t, a.SuspendRAM(ctx))
	require.NoError(t, a.Ping(ctx), "still in step after a reply-less command")
}

func TestDialAgentTimeout(t *testing.T) {
	_, err := DialAgent(filepath.Join(t.TempDir(), "none.sock"), 300*time.Millisecond)
	require.ErrorContains(t, err, "none.sock")
}
