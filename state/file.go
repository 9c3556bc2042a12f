package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// Version is a state file format version.
type Version struct {
	Major, Minor uint16
}

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Header is the file-wide metadata.
type Header struct {
	// Format is the version the file was read as; Decode sets it, Encode
	// ignores it and always writes the current version.
	Format Version
	// Created is when the state was saved; it is stored to the nanosecond
	// and read back in UTC.
	Created time.Time
	// PMVMVersion is the version string of the pmvm that wrote the file.
	PMVMVersion string
	// VMName is the config's name.
	VMName string
	// Mode is how the VM is being carried over: reboot (host kexec, guest
	// in S3) or restart (only the VMM binary is replaced, guest paused).
	Mode memspec.Mode
	// ConfigFingerprint is the SHA-256 fingerprint of the config the VM ran
	// with (computed by package configs); a resume compares it.
	ConfigFingerprint [32]byte
}

// Section is one named, versioned payload.
type Section struct {
	// Name is a stable topology key: "machine", "vcpu/0", "uart@0x3f8".
	Name string
	// Version is the payload's own version, chosen by its owner.
	Version uint32
	// Payload is opaque to the container; JSON is recommended for records.
	Payload []byte
}

// File is a state file in memory.
type File struct {
	Header   Header
	Sections []Section
}

// Limits of the format.
const (
	// MaxNameLen is the longest section name, in bytes.
	MaxNameLen = 64
	// MaxSections is the most sections one file may hold.
	MaxSections = 1 << 16
	// MaxHeaderString is the longest pmvm version, VM name or mode, in bytes.
	MaxHeaderString = 1024
)

// ValidName reports whether name can name a section: 1 to 64 bytes of
// [a-z0-9@/_.:-].
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > MaxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '@', c == '/', c == '_', c == '.', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

func errInvalidName(name string) *Error {
	return newErr(ErrInvalidName,
		"section name %q is invalid: use 1 to %d bytes of lower-case letters, digits and @/_.:- (e.g. \"uart@0x3f8\", \"vcpu/0\")",
		name, MaxNameLen)
}

func errDuplicate(name string) *Error {
	return newErr(ErrDuplicateSection,
		"section %q appears twice: section names must be unique (derive them from the machine topology, e.g. \"vcpu/1\")", name)
}

// Add appends a section. The name must be valid and not yet used; the
// payload is copied.
func (f *File) Add(name string, version uint32, payload []byte) error {
	if !ValidName(name) {
		return errInvalidName(name)
	}
	if _, dup := f.Section(name); dup {
		return errDuplicate(name)
	}
	if len(f.Sections) >= MaxSections {
		return newErr(ErrTooLarge, "cannot add section %q: a state file holds at most %d sections", name, MaxSections)
	}
	var p []byte
	if len(payload) > 0 {
		p = bytes.Clone(payload)
	}
	f.Sections = append(f.Sections, Section{Name: name, Version: version, Payload: p})
	return nil
}

// AddJSON appends a section whose payload is v encoded as JSON.
func (f *File) AddJSON(name string, version uint32, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("section %q: encoding JSON: %w", name, err)
	}
	return f.Add(name, version, b)
}

// Section returns the section called name.
func (f *File) Section(name string) (*Section, bool) {
	for i := range f.Sections {
		if f.Sections[i].Name == name {
			return &f.Sections[i], true
		}
	}
	return nil, false
}

// Need returns the section called name for a restorer that understands its
// payload up to version known. A missing section is ErrMissingSection; a
// newer one is ErrSectionVersion. Older versions are returned: the restorer
// decides whether it still reads them.
func (f *File) Need(name string, known uint32) (*Section, error) {
	s, ok := f.Section(name)
	if !ok {
		return nil, newErr(ErrMissingSection,
			"state file has no section %q: it was saved from a machine without it; check that the config matches the one the VM was saved with", name)
	}
	if s.Version > known {
		return nil, newErr(ErrSectionVersion,
			"section %q is version %d, newer than this pmvm understands (up to %d): use the pmvm that wrote it or a newer one",
			name, s.Version, known)
	}
	return s, nil
}

// DecodeJSON decodes the payload into v strictly: an unknown field, a second
// value or trailing garbage is an error naming the section.
func (s *Section) DecodeJSON(v any) error {
	dec := json.NewDecoder(bytes.NewReader(s.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("section %q (version %d): %w: the payload does not match what this pmvm expects; use the pmvm that wrote it", s.Name, s.Version, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("section %q (version %d): data after the JSON value: the payload does not match what this pmvm expects; use the pmvm that wrote it", s.Name, s.Version)
	}
	return nil
}

// checkHeaderString validates a header string for both Encode and Decode,
// so whatever Decode accepts, Encode writes back.
func checkHeaderString(field, s string, required bool) string {
	switch {
	case required && s == "":
		return field + " is empty"
	case len(s) > MaxHeaderString:
		return fmt.Sprintf("%s is %d bytes, over %d", field, len(s), MaxHeaderString)
	case !utf8.ValidString(s):
		return field + " is not valid UTF-8"
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Sprintf("%s %q contains control characters", field, s)
		}
	}
	return ""
}

// checkMode accepts any lower-case word so that a newer pmvm's mode is still
// readable (and refused by the restorer, not the container).
func checkMode(m memspec.Mode) string {
	if m == "" {
		return "mode is empty (want \"reboot\" or \"restart\")"
	}
	if len(m) > 32 {
		return fmt.Sprintf("mode is %d bytes, over 32", len(m))
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; !(c >= 'a' && c <= 'z' || c == '-') {
			return fmt.Sprintf("mode %q is not a lower-case word (want \"reboot\" or \"restart\")", m)
		}
	}
	return ""
}

func (h *Header) check() string {
	if msg := checkHeaderString("pmvm version", h.PMVMVersion, false); msg != "" {
		return msg
	}
	if msg := checkHeaderString("VM name", h.VMName, true); msg != "" {
		return msg
	}
	return checkMode(h.Mode)
}
