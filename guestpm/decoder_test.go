package guestpm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// msgs renders events as strings, "FF" for a sentinel, for readable diffs.
func msgs(evs []Event) []string {
	out := []string{}
	for _, ev := range evs {
		if ev.Sentinel {
			out = append(out, "FF")
		} else {
			out = append(out, string(ev.Msg))
		}
	}
	return out
}

// TestDecoderFraming proves each framing rule on a hand-written stream:
// junk outside objects, braces in strings and escapes, nesting, 0xFF
// resetting a partial object, a newline dropping a truncated one, and the
// size bound dropping an over-long one while the next reply survives.
func TestDecoderFraming(t *testing.T) {
	long := `{"a":"` + strings.Repeat("x", 100) + `"}`
	cases := []struct {
		name string
		in   string
		want []string
	}{
		{"one reply", `{"return": {}}` + "\n", []string{`{"return": {}}`}},
		{"two replies in one chunk", `{"return":1}` + "\n" + `{"return":2}` + "\n", []string{`{"return":1}`, `{"return":2}`}},
		{"no newline needed", `{"return":1}{"return":2}`, []string{`{"return":1}`, `{"return":2}`}},
		{"braces in strings", `{"return":"}{]["}`, []string{`{"return":"}{]["}`}},
		{"escaped quote and backslash", `{"return":"a\"}b\\"}`, []string{`{"return":"a\"}b\\"}`}},
		{"nesting", `{"return":[{"a":[1,{}]},{}]}`, []string{`{"return":[{"a":[1,{}]},{}]}`}},
		{"junk before", "login: \x00\x01abc" + `{"return":1}`, []string{`{"return":1}`}},
		{"stray closers are junk", `}}]]{"return":4}`, []string{`{"return":4}`}},
		{"top-level array is junk", `[1,{"x":2}]`, []string{`{"x":2}`}},
		{"extra ] drops the object", `{]{"return":1}`, []string{`{"return":1}`}},
		{"} with [ open drops the object", `{[}{"return":1}`, []string{`{"return":1}`}},
		{"FF resets a partial object", `{"return": {"vers` + "\xff" + `{"return":2}` + "\n", []string{"FF", `{"return":2}`}},
		{"FF inside a string resets too", `{"return": "ab` + "\xff" + `{"return":2}`, []string{"FF", `{"return":2}`}},
		{"newline drops a truncated object", `{"return": 1` + "\n" + `{"return":2}` + "\n", []string{`{"return":2}`}},
		{"over-long dropped, rest of line skipped", long + `{"return":9}` + "\n" + `{"return":3}` + "\n", []string{`{"return":3}`}},
		{"over-long ended by FF", long[:80] + "\xff" + `{"return":3}`, []string{"FF", `{"return":3}`}},
		{"exactly at the bound", `{"a":"` + strings.Repeat("y", 64-8) + `"}`, []string{`{"a":"` + strings.Repeat("y", 64-8) + `"}`}},
		{"one past the bound", `{"a":"` + strings.Repeat("y", 64-7) + `"}`, []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecoder(64)
			assert.Equal(t, tc.want, msgs(d.Feed(nil, []byte(tc.in))))
			// the same stream byte by byte gives the same events
			d = NewDecoder(64)
			var evs []Event
			for i := range len(tc.in) {
				evs = d.Feed(evs, []byte{tc.in[i]})
			}
			assert.Equal(t, tc.want, msgs(evs))
		})
	}
}

// TestDecoderStats proves the counters say what was thrown away.
func TestDecoderStats(t *testing.T) {
	d := NewDecoder(64)
	d.Feed(nil, []byte("ab"+`{"x":1`+"\n"+`{"a":"`+strings.Repeat("x", 80)+"\n\xff"+`{}`))
	s := d.Stats()
	assert.Equal(t, uint64(1), s.Messages)
	assert.Equal(t, uint64(1), s.Sentinels)
	assert.Equal(t, uint64(1), s.Truncated)
	assert.Equal(t, uint64(1), s.Overlong)
	assert.Equal(t, uint64(2+7+87), s.Junk) // "ab"; `{"x":1` and its newline; the long line and its newline
}

// TestDecoderZeroValue proves the zero Decoder works with the default bound.
func TestDecoderZeroValue(t *testing.T) {
	var d Decoder
	assert.Equal(t, []string{`{"return":{}}`}, msgs(d.Feed(nil, []byte(`{"return":{}}`))))
	assert.Equal(t, DefaultMaxMessage, d.Max())
	assert.Equal(t, 64, NewDecoder(1).Max(), "tiny bounds are raised")
}

// TestDecoderChunkingInvariance proves that how the line chunks the bytes
// never changes the events, on random streams of replies, junk and 0xFF.
func TestDecoderChunkingInvariance(t *testing.T) {
	pieces := []string{`{"return":{}}` + "\n", `{"return":"}{\"\\"}`, "\xff", "\n", "junk", `{"a":[`, `]}`, `{"x":"` + strings.Repeat("z", 90) + `"}`, `"`, `\`, "{", "}"}
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 500; iter++ {
		var b bytes.Buffer
		for range r.IntN(30) {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		stream := b.Bytes()
		whole := NewDecoder(64).Feed(nil, stream)
		d := NewDecoder(64)
		var parts []Event
		for rest := stream; len(rest) > 0; {
			n := 1 + r.IntN(len(rest))
			parts = d.Feed(parts, rest[:n])
			rest = rest[n:]
		}
		require.Equal(t, msgs(whole), msgs(parts), "stream %q", stream)
	}
}

// TestDecoderMemoryBound proves that megabytes of garbage (one endless
// object, many over-long ones, or plain noise) never make the decoder hold
// or allocate more than about its bound.
func TestDecoderMemoryBound(t *testing.T) {
	streams := map[string][]byte{
		"endless object": append([]byte(`{"a":"`), bytes.Repeat([]byte("x"), 8<<20)...),
		"deep nesting":   bytes.Repeat([]byte("{[\"a\":"), 1<<20),
		"noise":          bytes.Repeat([]byte("\x00}]\x7f"), 2<<20),
		"many over-long": bytes.Repeat(append(append([]byte(`{"a":"`), bytes.Repeat([]byte("y"), 70<<10)...), '\n'), 100),
	}
	for name, s := range streams {
		t.Run(name, func(t *testing.T) {
			d := NewDecoder(0)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			evs := make([]Event, 0, 1)
			events, maxHeld := 0, 0
			for off := 0; off < len(s); off += 4096 {
				evs = d.Feed(evs[:0], s[off:min(off+4096, len(s))])
				events += len(evs)
				maxHeld = max(maxHeld, cap(d.buf))
			}
			runtime.ReadMemStats(&after)
			assert.Zero(t, events)
			assert.LessOrEqual(t, maxHeld, DefaultMaxMessage)
			t.Logf("allocated %d bytes", after.TotalAlloc-before.TotalAlloc)
			assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(3*DefaultMaxMessage),
				"decoding %d bytes of garbage allocated too much", len(s))
		})
	}
}

// TestParseReply proves how messages are classified: return values of any
// type, agent errors, and things that are not replies (greetings, events,
// non-objects, malformed errors).
func TestParseReply(t *testing.T) {
	r, err := ParseReply([]byte(`{"return": {}}`))
	require.NoError(t, err)
	assert.JSONEq(t, `{}`, string(r.Return))
	assert.Nil(t, r.Err)

	r, err = ParseReply([]byte(`{"return": 1234567890123}`))
	require.NoError(t, err)
	assert.Equal(t, "1234567890123", string(r.Return))

	r, err = ParseReply([]byte(`{"error": {"class": "GenericError", "desc": "boom"}}`))
	require.NoError(t, err)
	assert.Equal(t, &Error{Class: "GenericError", Desc: "boom"}, r.Err)
	assert.Equal(t, "guest agent refused command: boom (GenericError)", r.Err.Error())

	r, err = ParseReply([]byte(`{"error": {"desc": "no class"}, "return": 1}`))
	require.NoError(t, err)
	assert.Equal(t, "no class", r.Err.Desc, "error wins over return")

	for _, bad := range []string{`{"event": "SHUTDOWN"}`, `{"QMP": {}}`, `[1]`, `null`, `{"return":`, `{"error": null}`,
		`{"error": "x"}`, `{"error": {}}`, `{"error": {"class": 5}}`} {
		_, err := ParseReply([]byte(bad))
		assert.Error(t, err, bad)
	}
	_, err = ParseReply([]byte(`{"event": "X"}`))
	assert.True(t, errors.Is(err, errNotReply))
}

// FuzzReplyParser proves, for arbitrary bytes from the guest: the decoder
// never panics, never emits or holds more than its bound, emits only
// '{'...'}' candidates, gives the same events however the bytes are
// chunked; ParseReply never panics on what it emits; and a well-formed
// reply (a sync answer with the fuzzed id, or an error whose desc is the
// junk itself) placed after the junk and a 0xFF is always found intact.
func FuzzReplyParser(f *testing.F) {
	f.Add([]byte(`{"return": {}}`+"\n"), int64(1), uint8(0))
	f.Add([]byte("\xff{\"return\": 42}\n"), int64(42), uint8(3))
	f.Add([]byte(`{"return": {"vers`), int64(-7), uint8(1))
	f.Add([]byte(`{"a":"\"}{\\"}`+"\n}]"), int64(1<<62), uint8(200))
	f.Fuzz(func(t *testing.T, junk []byte, id int64, chunk uint8) {
		const max = 128
		feed := func(d *Decoder, b []byte) []Event {
			var evs []Event
			step := int(chunk%31) + 1
			for off := 0; off < len(b); off += step {
				evs = d.Feed(evs, b[off:min(off+step, len(b))])
				if cap(d.buf) > d.Max() {
					t.Fatalf("decoder holds %d bytes, bound %d", cap(d.buf), d.Max())
				}
			}
			return evs
		}

		// arbitrary bytes
		d := NewDecoder(max)
		evs := feed(d, junk)
		if len(evs) > len(junk) {
			t.Fatalf("%d events from %d bytes", len(evs), len(junk))
		}
		for _, ev := range evs {
			if ev.Sentinel {
				continue
			}
			m := ev.Msg
			if len(m) > max || len(m) < 2 || m[0] != '{' || m[len(m)-1] != '}' {
				t.Fatalf("bad candidate %q", m)
			}
			_, _ = ParseReply(m)
		}
		if whole := NewDecoder(max).Feed(nil, junk); fmt.Sprint(msgs(whole)) != fmt.Sprint(msgs(evs)) {
			t.Fatalf("chunking changed the events: %q vs %q", msgs(whole), msgs(evs))
		}

		// a sync answer after junk and 0xFF is found, last
		stream := append(append(append([]byte{}, junk...), Sentinel), fmt.Sprintf(`{"return": %d}`+"\n", id)...)
		evs = feed(NewDecoder(max), stream)
		if len(evs) < 2 || !evs[len(evs)-2].Sentinel {
			t.Fatalf("sentinel not found: %q", msgs(evs))
		}
		r, err := ParseReply(evs[len(evs)-1].Msg)
		if err != nil {
			t.Fatalf("sync answer not parsed: %v", err)
		}
		var got int64
		if err := json.Unmarshal(r.Return, &got); err != nil || got != id {
			t.Fatalf("sync answer %s, want %d (%v)", r.Return, id, err)
		}

		// an error reply whose desc carries the junk (braces, quotes,
		// backslashes inside a string) is found intact
		desc, _ := json.Marshal(string(junk)) // invalid UTF-8 (and 0xFF) become U+FFFD
		reply := fmt.Appendf(nil, `{"error": {"class": "GenericError", "desc": %s}}`+"\n", desc)
		if len(reply) > DefaultMaxMessage {
			return
		}
		stream = append(append(append([]byte{}, junk...), Sentinel), reply...)
		evs = feed(NewDecoder(0), stream)
		if len(evs) == 0 || evs[len(evs)-1].Sentinel {
			t.Fatalf("error reply not found: %q", msgs(evs))
		}
		r, err = ParseReply(evs[len(evs)-1].Msg)
		if err != nil || r.Err == nil {
			t.Fatalf("error reply not parsed: %v", err)
		}
		var want string
		_ = json.Unmarshal(desc, &want)
		if r.Err.Desc != want || r.Err.Class != "GenericError" {
			t.Fatalf("error reply altered: %q", r.Err.Desc)
		}
	})
}
