package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// TestDescribe proves the human-readable form shows every header field and
// every section with its version and size, pretty-prints JSON payloads,
// shows binary payloads in hex, and flags a mode this pmvm does not know.
func TestDescribe(t *testing.T) {
	f, err := Decode(encode(t, sampleFile(t)), 0)
	require.NoError(t, err)
	var buf bytes.Buffer
	f.Describe(&buf)
	out := buf.String()
	for _, want := range []string{
		"format:       1.0\n",
		"created:      2026-03-14T15:09:26.535897932Z\n",
		"pmvm version: v0.4.0-test\n",
		"vm name:      demo\n",
		"mode:         reboot\n",
		"config:       sha256:a0a1a2a3",
		"sections:     9\n",
		`"runstate": "suspended"`,
		"  uart@0x3f8     version 2   ",
		"cmos@0x70      version 1   128 bytes\n      00070e151c23",
		"marker         version 0   0 bytes\n",
	} {
		assert.Contains(t, out, want)
	}
	for _, s := range f.Sections {
		assert.Contains(t, out, "  "+s.Name+" ")
	}

	f.Header.Mode = "live"
	buf.Reset()
	f.Describe(&buf)
	assert.Contains(t, buf.String(), "mode:         live (unknown to this pmvm)")
}

// TestDescribeCapsLongPayloads proves a huge JSON record does not flood the
// terminal: its pretty-print stops after a fixed number of lines.
func TestDescribeCapsLongPayloads(t *testing.T) {
	f := &File{Header: Header{VMName: "x", Mode: memspec.ModeRestart}}
	big := map[string]int{}
	for i := range 500 {
		big[fmt.Sprintf("msr_%04x", i)] = i
	}
	require.NoError(t, f.AddJSON("vcpu/0", 1, big))
	var buf bytes.Buffer
	f.Describe(&buf)
	assert.Contains(t, buf.String(), "more lines)")
	assert.Less(t, strings.Count(buf.String(), "\n"), describeLines+20)
}

// TestSummaryJSON proves the --json form carries the header, every section
// and JSON payloads inline, and decodes back into Summary.
func TestSummaryJSON(t *testing.T) {
	f, err := Decode(encode(t, sampleFile(t)), 0)
	require.NoError(t, err)
	b, err := json.Marshal(f.Summary())
	require.NoError(t, err)
	var s Summary
	require.NoError(t, json.Unmarshal(b, &s))
	assert.Equal(t, "1.0", s.Format)
	assert.Equal(t, "demo", s.VMName)
	assert.Equal(t, memspec.ModeReboot, s.Mode)
	assert.True(t, s.Created.Equal(f.Header.Created))
	assert.Equal(t, "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf", s.ConfigFingerprint)
	require.Len(t, s.Sections, len(f.Sections))
	for i, sec := range f.Sections {
		assert.Equal(t, sec.Name, s.Sections[i].Name)
		assert.Equal(t, sec.Version, s.Sections[i].Version)
		assert.Equal(t, len(sec.Payload), s.Sections[i].Size)
	}
	m, _ := f.Section("machine")
	assert.JSONEq(t, string(m.Payload), string(s.Sections[0].JSON))
	assert.Nil(t, s.Sections[4].JSON, "binary cmos payload is not inlined")
}
