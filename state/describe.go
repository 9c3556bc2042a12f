package state

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// Summary is the machine-readable description of a file (pmvm state
// inspect --json).
type Summary struct {
	Format            string           `json:"format"`
	Created           time.Time        `json:"created"`
	PMVMVersion       string           `json:"pmvm_version"`
	VMName            string           `json:"vm_name"`
	Mode              memspec.Mode     `json:"mode"`
	ConfigFingerprint string           `json:"config_fingerprint"` // hex SHA-256
	Sections          []SectionSummary `json:"sections"`
}

// SectionSummary describes one section. JSON holds the payload itself when
// the payload is a JSON value.
type SectionSummary struct {
	Name    string          `json:"name"`
	Version uint32          `json:"version"`
	Size    int             `json:"size"`
	JSON    json.RawMessage `json:"json,omitempty"`
}

// Summary describes f.
func (f *File) Summary() Summary {
	h := &f.Header
	s := Summary{
		Format:            h.Format.String(),
		Created:           h.Created,
		PMVMVersion:       h.PMVMVersion,
		VMName:            h.VMName,
		Mode:              h.Mode,
		ConfigFingerprint: hex.EncodeToString(h.ConfigFingerprint[:]),
		Sections:          make([]SectionSummary, 0, len(f.Sections)),
	}
	for _, sec := range f.Sections {
		ss := SectionSummary{Name: sec.Name, Version: sec.Version, Size: len(sec.Payload)}
		if len(sec.Payload) > 0 && json.Valid(sec.Payload) {
			ss.JSON = json.RawMessage(sec.Payload)
		}
		s.Sections = append(s.Sections, ss)
	}
	return s
}

// describeLines caps how much of one JSON payload Describe prints.
const describeLines = 40

// Describe writes a human-readable description of f: the header, then one
// line per section (name, version, size) followed by its payload
// pretty-printed when it is JSON, or its first bytes in hex otherwise.
func (f *File) Describe(w io.Writer) {
	h := &f.Header
	fmt.Fprintf(w, "format:       %s\n", h.Format)
	fmt.Fprintf(w, "created:      %s\n", h.Created.Format(time.RFC3339Nano))
	fmt.Fprintf(w, "pmvm version: %s\n", h.PMVMVersion)
	fmt.Fprintf(w, "vm name:      %s\n", h.VMName)
	mode := string(h.Mode)
	if !h.Mode.CarriedByStateFile() {
		mode += " (unknown to this pmvm)"
	}
	fmt.Fprintf(w, "mode:         %s\n", mode)
	fmt.Fprintf(w, "config:       sha256:%x\n", h.ConfigFingerprint)
	fmt.Fprintf(w, "sections:     %d\n", len(f.Sections))
	width := 0
	for _, s := range f.Sections {
		width = max(width, len(s.Name))
	}
	for _, s := range f.Sections {
		fmt.Fprintf(w, "  %-*s  version %-3d %d bytes\n", width, s.Name, s.Version, len(s.Payload))
		describePayload(w, s.Payload)
	}
}

func describePayload(w io.Writer, p []byte) {
	const indent = "      "
	if len(p) == 0 {
		return
	}
	if json.Valid(p) {
		var buf bytes.Buffer
		if json.Indent(&buf, p, indent, "  ") == nil {
			lines := strings.Split(buf.String(), "\n")
			if len(lines) > describeLines {
				more := len(lines) - describeLines
				lines = append(lines[:describeLines], fmt.Sprintf("%s... (%d more lines)", indent, more))
			}
			fmt.Fprintf(w, "%s%s\n", indent, strings.Join(lines, "\n"))
			return
		}
	}
	const maxHex = 32
	n := min(len(p), maxHex)
	suffix := ""
	if len(p) > maxHex {
		suffix = " ..."
	}
	fmt.Fprintf(w, "%s%s%s\n", indent, hex.EncodeToString(p[:n]), suffix)
}
