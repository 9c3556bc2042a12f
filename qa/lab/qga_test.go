package lab

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

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
			case "guest-suspend-ram":
				// no reply on success
			default:
				fmt.Fprintf(c, "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command %s has not been found\"}}\n", req.Execute)
			}
		}
	}()
	return sock
}

func TestAgentClient(t *testing.T) {
	a, err := DialAgent(fakeAgent(t), time.Second)
	require.NoError(t, err)
	defer a.Close()
	t0 := time.Now()
	require.NoError(t, a.Sync(10*time.Second))
	require.GreaterOrEqual(t, time.Since(t0), 2*time.Second, "the first sync was ignored: the client must have retried")
	ret, err := a.Call("guest-ping", nil, time.Second)
	require.NoError(t, err)
	require.JSONEq(t, `{}`, string(ret))
	_, err = a.Call("guest-bogus", nil, time.Second)
	var ae *AgentError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, "CommandNotFound", ae.Class)
	require.NoError(t, a.Send("guest-suspend-ram", nil))
	_, err = a.Call("guest-ping", nil, time.Second) // still in step after a reply-less command
	require.NoError(t, err)
}

func TestAgentDialTimeout(t *testing.T) {
	_, err := DialAgent(filepath.Join(t.TempDir(), "none.sock"), 300*time.Millisecond)
	require.ErrorContains(t, err, "none.sock")
}
