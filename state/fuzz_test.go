package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// fuzzLimit is the cap FuzzDecode decodes under; inputs over it must be
// refused without parsing.
const fuzzLimit = 1 << 16

// FuzzDecode: arbitrary bytes never make Decode panic or allocate more than
// a small multiple of the input (which the cap bounds); every refusal is a
// typed *Error of a known kind with a message; every accepted file
// re-encodes, and decodes again to the same file.
//
// Random bytes almost never pass the checksums, so each input is decoded
// twice: as is, and "resealed" (magic, major, total length and both
// checksums fixed up) so that the header and section parser behind the
// checksums sees the fuzzer's length fields too.
// Seeds: the golden file plus testdata/fuzz/FuzzDecode (valid files, one per
// refusal kind, and edits of length fields with recomputed checksums).
func FuzzDecode(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "golden-1.0.pmvmstate")); err == nil {
		f.Add(b)
	}
	f.Add(encode(f, sampleFile(f)))
	var execs uint64
	f.Fuzz(func(t *testing.T, data []byte) {
		execs++
		// Measuring allocations stops the world; sample it so the fuzzer
		// (and its minimizer) keeps its speed.
		measure := execs%16 == 0
		checkDecode(t, data, measure)
		if len(data) >= minFileLen && len(data) <= fuzzLimit {
			c := bytes.Clone(data)
			copy(c, magic)
			binary.LittleEndian.PutUint16(c[offMajor:], FormatMajor)
			setTotal(c, uint64(len(c)))
			checkDecode(t, reseal(c), measure)
		}
	})
}

var fuzzKinds = []error{ErrNotStateFile, ErrVersion, ErrChecksum, ErrTruncated, ErrTooLarge, ErrMalformed}

func checkDecode(t *testing.T, data []byte, measure bool) {
	var before, after runtime.MemStats
	if measure {
		runtime.ReadMemStats(&before)
	}
	file, err := Decode(data, fuzzLimit)
	if measure {
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(8*len(data)+64<<10) {
			t.Fatalf("Decode of %d bytes allocated %d bytes", len(data), alloc)
		}
	}
	if err != nil {
		if file != nil {
			t.Fatal("Decode returned both a file and an error")
		}
		var se *Error
		if !errors.As(err, &se) || err.Error() == "" {
			t.Fatalf("untyped or empty error %v", err)
		}
		for _, k := range fuzzKinds {
			if errors.Is(err, k) {
				return
			}
		}
		t.Fatalf("error of unknown kind: %v", err)
	}
	if len(data) > fuzzLimit {
		t.Fatalf("accepted %d bytes over the %d cap", len(data), fuzzLimit)
	}
	again, err := file.Encode()
	if err != nil {
		t.Fatalf("Decode accepted a file Encode refuses: %v", err)
	}
	file2, err := Decode(again, 0)
	if err != nil {
		t.Fatalf("re-encoded file refused: %v", err)
	}
	file.Header.Format.Minor = FormatMinor // Encode writes the current minor
	if !filesEqual(file, file2) {
		t.Fatalf("re-encode changed the file:\n%+v\n%+v", file, file2)
	}
	file.Describe(discard{})
	_ = file.Summary()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func filesEqual(a, b *File) bool {
	if a.Header != b.Header || len(a.Sections) != len(b.Sections) {
		return false
	}
	for i := range a.Sections {
		x, y := a.Sections[i], b.Sections[i]
		if x.Name != y.Name || x.Version != y.Version || string(x.Payload) != string(y.Payload) {
			return false
		}
	}
	return true
}
