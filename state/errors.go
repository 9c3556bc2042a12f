package state

import (
	"errors"
	"fmt"
)

// Kinds of refusal. Every error this package returns for a bad file or a bad
// argument is an *Error whose Kind is one of these, so callers test with
// errors.Is(err, state.ErrChecksum) and print err for the full message.
var (
	// ErrNotStateFile: the input does not start with the magic.
	ErrNotStateFile = errors.New("not a pmvm state file")
	// ErrVersion: the format major version is not one this pmvm reads.
	ErrVersion = errors.New("unsupported state file format version")
	// ErrChecksum: a checksum does not match the bytes it covers.
	ErrChecksum = errors.New("state file checksum mismatch")
	// ErrTruncated: the input ends before the file does.
	ErrTruncated = errors.New("state file truncated")
	// ErrTooLarge: the input, or the length its header claims, is over the cap.
	ErrTooLarge = errors.New("state file too large")
	// ErrMalformed: the checksums match but the structure breaks the format
	// (a length past the end, a bad name, a duplicate section...).
	ErrMalformed = errors.New("malformed state file")
	// ErrInvalidName: a section name is not [a-z0-9@/_.:-]+ of at most 64 bytes.
	ErrInvalidName = errors.New("invalid section name")
	// ErrDuplicateSection: a section name appears twice.
	ErrDuplicateSection = errors.New("duplicate section")
	// ErrInvalidHeader: a header field cannot be written (bad mode, control
	// characters, too long).
	ErrInvalidHeader = errors.New("invalid state file header")
	// ErrMissingSection: a restorer needs a section the file does not have.
	ErrMissingSection = errors.New("missing section")
	// ErrSectionVersion: a section is newer than its restorer understands.
	ErrSectionVersion = errors.New("section version too new")
)

// Error is a refusal with its context. Kind is one of the Err* values above;
// Cause, when set, is a second kind it also matches (a duplicate name found by
// Decode is ErrMalformed with Cause ErrDuplicateSection). Msg is the complete
// sentence: what is wrong and what to do.
type Error struct {
	Kind  error
	Cause error
	Path  string // the file, when known (ReadFile, WriteFile)
	Msg   string
}

func (e *Error) Error() string {
	if e.Path != "" {
		return e.Path + ": " + e.Msg
	}
	return e.Msg
}

// Unwrap lets errors.Is match Kind and Cause.
func (e *Error) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Kind, e.Cause}
	}
	return []error{e.Kind}
}

// untouched ends every refusal of a file that a resume might be reading.
const untouched = "do not resume from it; the guest's memory is untouched"

func newErr(kind error, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

func errNotStateFile(prefix []byte) *Error {
	return newErr(ErrNotStateFile,
		"this is not a pmvm state file (it begins with %q; a state file begins with %q): check the path", prefix, magic)
}

func errVersion(major uint16) *Error {
	if major > FormatMajor {
		return newErr(ErrVersion,
			"state file format %d.x is newer than this pmvm understands (%d.x): use the pmvm that wrote it or a newer one",
			major, FormatMajor)
	}
	return newErr(ErrVersion,
		"state file format %d.x is older than this pmvm understands (%d.x): use the pmvm that wrote it",
		major, FormatMajor)
}

func errChecksum(what string) *Error {
	return newErr(ErrChecksum, "state file is corrupt (checksum mismatch: %s): %s", what, untouched)
}

func errTruncated(have, want uint64) *Error {
	if have == 0 {
		return newErr(ErrTruncated, "state file is empty (0 bytes): it was never written completely; %s", untouched)
	}
	if want == 0 {
		return newErr(ErrTruncated,
			"state file is truncated (%d bytes, shorter than the %d-byte fixed header): it was cut short by an incomplete copy or write; %s",
			have, fixedLen, untouched)
	}
	return newErr(ErrTruncated,
		"state file is truncated (%d bytes; its header says %d): it was cut short by an incomplete copy or write; %s",
		have, want, untouched)
}

func errTooLarge(what string, size, limit uint64) *Error {
	return newErr(ErrTooLarge,
		"state file is too large (%s %d bytes, over the %d-byte cap): state files are small; if this one is genuine, read it with a larger limit",
		what, size, limit)
}

func errMalformed(off int, format string, args ...any) *Error {
	return newErr(ErrMalformed, "state file is malformed at byte %d: %s: its checksums match, so the pmvm that wrote it has a bug; %s",
		off, fmt.Sprintf(format, args...), untouched)
}
