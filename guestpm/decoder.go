package guestpm

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Sentinel is the byte that resets JSON parsing on both ends of the agent
// line: a client sends it before guest-sync-delimited so that qga drops any
// half-read request, and qga sends it before answering guest-sync-delimited so
// that the client drops any half-read reply. It can never occur in UTF-8 text.
const Sentinel = 0xFF

// DefaultMaxMessage bounds one message from the agent. qga's replies to the
// commands this package sends are a few KiB at most (guest-info lists ~50
// commands); anything longer is garbage and is discarded without being held.
const DefaultMaxMessage = 64 << 10

// minMaxMessage is the smallest bound a Decoder accepts: a guest-info reply
// must fit, and tiny bounds would only make every reply "over-long".
const minMaxMessage = 64

// Event is one thing the Decoder found in the byte stream: either a 0xFF
// sentinel or one complete, brace-balanced JSON object.
type Event struct {
	// Sentinel is true for a 0xFF byte; Msg is then nil.
	Sentinel bool
	// Msg is a candidate JSON object: it starts with '{', ends with the '}'
	// that balances it, and is at most the Decoder's bound long. It is not
	// validated as JSON (ParseReply does that) and is owned by the receiver.
	Msg []byte
}

// DecoderStats counts what a Decoder threw away, for logs.
type DecoderStats struct {
	Messages  uint64 // complete objects emitted
	Sentinels uint64 // 0xFF bytes seen
	Junk      uint64 // bytes discarded: outside any object, or part of a dropped one
	Truncated uint64 // objects dropped: a newline or 0xFF came before they closed, or unbalanced brackets
	Overlong  uint64 // objects dropped because they exceeded the bound
}

// Decoder splits the agent's byte stream into Events. It is a pure state
// machine with no I/O, safe to feed arbitrary bytes in arbitrary chunks (the
// result does not depend on how the stream is chunked), and never holds more
// than its bound: an over-long object is dropped and the rest of its line
// skipped.
//
// Framing rules, matching how qga writes (one compact JSON object per line):
//   - 0xFF resets everything and yields a Sentinel event;
//   - outside an object, bytes other than '{' are junk;
//   - an object ends with the '}' that balances its first '{' (braces and
//     brackets are counted apart, as QEMU's own JSON streamer does, and
//     strings and escapes are tracked, so braces inside strings do not
//     count); an object whose ']' outnumber its '[', or that closes with a
//     '[' open, is dropped;
//   - a newline inside an unclosed object means bytes were lost (qga never
//     breaks a reply across lines, and JSON strings cannot hold a raw newline):
//     the partial object is dropped, so one lost '}' costs one message, not
//     every message until the bound.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	max      int
	buf      []byte // the object being collected; cap(buf) <= max always
	braces   int    // open '{' in buf; 0 when not collecting
	brackets int    // open '[' in buf
	inStr    bool   // inside a JSON string
	esc      bool   // the previous byte was a backslash inside a string
	skip     bool   // dropping the rest of an over-long line
	stats    DecoderStats
}

// NewDecoder returns a Decoder that holds at most max bytes of one message;
// max <= 0 means DefaultMaxMessage, and values below 64 are raised to 64.
func NewDecoder(max int) *Decoder {
	if max <= 0 {
		max = DefaultMaxMessage
	}
	if max < minMaxMessage {
		max = minMaxMessage
	}
	return &Decoder{max: max}
}

// Max is the bound on one message.
func (d *Decoder) Max() int { return d.max }

// Stats returns the counters since the Decoder was made.
func (d *Decoder) Stats() DecoderStats { return d.stats }

// Reset drops any partial object, as a 0xFF would, without emitting an Event.
func (d *Decoder) Reset() {
	if d.braces > 0 {
		d.stats.Truncated++
		d.stats.Junk += uint64(len(d.buf))
	}
	d.buf = d.buf[:0]
	d.braces, d.brackets = 0, 0
	d.inStr = false
	d.esc = false
	d.skip = false
}

// Feed consumes p and appends the Events it completes to dst, returning the
// extended slice. Partial objects are kept for the next Feed.
func (d *Decoder) Feed(dst []Event, p []byte) []Event {
	if d.max == 0 { // the zero Decoder works too
		d.max = DefaultMaxMessage
	}
	for _, b := range p {
		if b == Sentinel {
			d.Reset()
			d.stats.Sentinels++
			dst = append(dst, Event{Sentinel: true})
			continue
		}
		if d.skip {
			d.stats.Junk++
			if b == '\n' {
				d.skip = false
			}
			continue
		}
		if d.braces == 0 {
			switch b {
			case '{':
				d.push(b)
				d.braces = 1
			case ' ', '\t', '\r', '\n':
				// separators between replies: not worth counting
			default:
				d.stats.Junk++
			}
			continue
		}
		if b == '\n' {
			d.Reset()
			d.stats.Junk++
			continue
		}
		if len(d.buf) == d.max {
			d.stats.Overlong++
			d.stats.Junk += uint64(len(d.buf)) + 1
			d.buf = d.buf[:0]
			d.braces, d.brackets = 0, 0
			d.inStr, d.esc = false, false
			d.skip = true
			continue
		}
		d.push(b)
		if d.inStr {
			switch {
			case d.esc:
				d.esc = false
			case b == '\\':
				d.esc = true
			case b == '"':
				d.inStr = false
			}
			continue
		}
		switch b {
		case '"':
			d.inStr = true
		case '{':
			d.braces++
		case '[':
			d.brackets++
		case ']':
			d.brackets--
			if d.brackets < 0 { // more ']' than '[': not JSON
				d.Reset()
			}
		case '}':
			d.braces--
			switch {
			case d.braces > 0:
			case d.brackets != 0: // closed with a '[' still open: not JSON
				d.Reset()
			default:
				msg := make([]byte, len(d.buf))
				copy(msg, d.buf)
				dst = append(dst, Event{Msg: msg})
				d.stats.Messages++
				d.buf = d.buf[:0]
			}
		}
	}
	return dst
}

// push appends b to buf, growing it geometrically but never beyond max (a
// plain append could double past the bound). The caller checked len < max.
func (d *Decoder) push(b byte) {
	if len(d.buf) == cap(d.buf) {
		n := 2 * cap(d.buf)
		if n < 256 {
			n = 256
		}
		if n > d.max {
			n = d.max
		}
		nb := make([]byte, len(d.buf), n)
		copy(nb, d.buf)
		d.buf = nb
	}
	d.buf = append(d.buf, b)
}

// Reply is one answer from the agent: exactly one of Return and Err is set.
type Reply struct {
	// Return is the raw "return" member, e.g. {} for guest-ping or an integer
	// for guest-sync-delimited and guest-get-time.
	Return json.RawMessage
	// Err is the "error" member.
	Err *Error
}

// errNotReply is returned by ParseReply for valid JSON objects that are not
// replies (a QMP greeting or an event); the client ignores them.
var errNotReply = errors.New("not a reply: neither \"return\" nor \"error\"")

// ParseReply classifies one message from the Decoder. It fails for anything
// that is not a JSON object with a "return" or an "error" member; an "error"
// member must be an object with string "class" and "desc".
func ParseReply(msg []byte) (Reply, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(msg, &m); err != nil {
		return Reply{}, fmt.Errorf("not a JSON object: %w", err)
	}
	if m == nil { // the literal null
		return Reply{}, errors.New("not a JSON object: null")
	}
	if raw, ok := m["error"]; ok {
		var e struct {
			Class *string `json:"class"`
			Desc  *string `json:"desc"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			return Reply{}, fmt.Errorf("malformed \"error\" member: %w", err)
		}
		if e.Class == nil && e.Desc == nil {
			return Reply{}, errors.New("malformed \"error\" member: no class or desc")
		}
		ae := &Error{}
		if e.Class != nil {
			ae.Class = *e.Class
		}
		if e.Desc != nil {
			ae.Desc = *e.Desc
		}
		return Reply{Err: ae}, nil
	}
	if raw, ok := m["return"]; ok {
		return Reply{Return: raw}, nil
	}
	return Reply{}, errNotReply
}
