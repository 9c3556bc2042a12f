package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
)

var update = flag.Bool("update", false, "rewrite testdata/golden-1.0.pmvmstate")

// TestRoundTrip proves Encode then Decode returns the same file (header,
// every section in order, binary, JSON and empty payloads), and that
// encoding is deterministic: re-encoding the decoded file gives the same
// bytes.
func TestRoundTrip(t *testing.T) {
	f := sampleFile(t)
	b := encode(t, f)
	got, err := Decode(b, 0)
	require.NoError(t, err)
	assert.Equal(t, withFormat(f), got)
	assert.Equal(t, b, encode(t, got))
	assert.Equal(t, "1.0", got.Header.Format.String())
}

// TestRoundTripEdgeValues proves the extremes survive: the zero time, no
// sections, an empty pmvm version, a maximal name, a 1 MiB payload.
func TestRoundTripEdgeValues(t *testing.T) {
	cases := map[string]*File{
		"zero time, no sections, empty version": {Header: Header{VMName: "x", Mode: memspec.ModeRestart}},
		"pre-1970 time": {Header: Header{VMName: "x", Mode: memspec.ModeReboot,
			Created: time.Date(1901, 1, 1, 0, 0, 0, 1, time.UTC)}},
		"long name and big payload": func() *File {
			f := &File{Header: Header{VMName: strings.Repeat("n", MaxHeaderString), Mode: memspec.ModeReboot}}
			require.NoError(t, f.Add(strings.Repeat("a", MaxNameLen), ^uint32(0), bytes.Repeat([]byte{0xff}, 1<<20)))
			return f
		}(),
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Decode(encode(t, f), 0)
			require.NoError(t, err)
			assert.Equal(t, withFormat(f), got)
		})
	}
}

// TestDecodeDoesNotAliasInput proves a decoded File owns its payloads: the
// caller may reuse its buffer.
func TestDecodeDoesNotAliasInput(t *testing.T) {
	b := encode(t, sampleFile(t))
	got, err := Decode(b, 0)
	require.NoError(t, err)
	for i := range b {
		b[i] = 0
	}
	assert.Equal(t, withFormat(sampleFile(t)), got)
}

// TestJSONSection proves AddJSON/DecodeJSON round-trip a record, and that
// DecodeJSON is strict: a field this pmvm does not know, or data after the
// value, is refused with the section's name.
func TestJSONSection(t *testing.T) {
	in := uartRecord{IER: 0x0f, LCR: 0x03, SCR: 0x5a, DLL: 12, RX: []byte{0, 1, 2}}
	f := &File{Header: Header{VMName: "demo", Mode: memspec.ModeReboot}}
	require.NoError(t, f.AddJSON("uart@0x3f8", 2, in))
	got, err := Decode(encode(t, f), 0)
	require.NoError(t, err)
	s, ok := got.Section("uart@0x3f8")
	require.True(t, ok)
	var out uartRecord
	require.NoError(t, s.DecodeJSON(&out))
	assert.Equal(t, in, out)

	// A newer writer added a field: an older reader must not drop it silently.
	extra := Section{Name: "uart@0x3f8", Version: 3, Payload: []byte(`{"IER":1,"FCR":7}`)}
	err = extra.DecodeJSON(&out)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown field "FCR"`)
	assert.Contains(t, err.Error(), `section "uart@0x3f8" (version 3)`)

	trailing := Section{Name: "clock", Payload: []byte(`{} {}`)}
	err = trailing.DecodeJSON(&map[string]any{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "data after the JSON value")

	assert.Error(t, f.AddJSON("bad", 1, make(chan int)), "unencodable value")
}

// TestSectionNames proves Add accepts exactly [a-z0-9@/_.:-]{1,64} and
// refuses duplicates, each with a typed error that says what a good name is.
func TestSectionNames(t *testing.T) {
	valid := []string{"machine", "vcpu/0", "uart@0x3f8", "cmos@0x70", "acpi-pm@0x600",
		"memory/ram0", "clock", "a", "virtio_net.0:rx", strings.Repeat("z", 64),
		"abcdefghijklmnopqrstuvwxyz0123456789@/_.:-"}
	invalid := []string{"", "UART@0x3f8", "uart 0x3f8", "vcpu\\0", "é", "name\n",
		strings.Repeat("z", 65), "uart@0x3F8", "a+b", "\x00"}
	f := &File{}
	for _, n := range valid {
		assert.NoError(t, f.Add(n, 1, nil), "%q", n)
	}
	for _, n := range invalid {
		err := f.Add(n, 1, nil)
		assert.ErrorIs(t, err, ErrInvalidName, "%q", n)
		if err != nil {
			assert.Contains(t, err.Error(), "lower-case letters, digits and @/_.:-")
		}
	}
	err := f.Add("vcpu/0", 2, []byte("x"))
	assert.ErrorIs(t, err, ErrDuplicateSection)
	assert.Contains(t, err.Error(), `section "vcpu/0" appears twice`)
	assert.Len(t, f.Sections, len(valid), "refused sections are not added")
}

// TestEncodeRefuses proves Encode re-validates what the exported fields let
// a caller set directly, and refuses a file too big to read back.
func TestEncodeRefuses(t *testing.T) {
	ok := func() *File { return &File{Header: Header{VMName: "demo", Mode: memspec.ModeReboot}} }
	cases := []struct {
		name string
		edit func(f *File)
		kind error
		msg  string
	}{
		{"empty vm name", func(f *File) { f.Header.VMName = "" }, ErrInvalidHeader, "VM name is empty"},
		{"empty mode", func(f *File) { f.Header.Mode = "" }, ErrInvalidHeader, "mode is empty"},
		{"mode not a word", func(f *File) { f.Header.Mode = "Reboot" }, ErrInvalidHeader, `mode "Reboot"`},
		{"control character", func(f *File) { f.Header.VMName = "de\x1b[2Jmo" }, ErrInvalidHeader, "control characters"},
		{"bad utf-8", func(f *File) { f.Header.PMVMVersion = "\xff" }, ErrInvalidHeader, "not valid UTF-8"},
		{"long string", func(f *File) { f.Header.PMVMVersion = strings.Repeat("v", MaxHeaderString+1) }, ErrInvalidHeader, "over 1024"},
		{"invalid name", func(f *File) { f.Sections = []Section{{Name: "Bad"}} }, ErrInvalidName, `"Bad" is invalid`},
		{"duplicate", func(f *File) { f.Sections = []Section{{Name: "clock"}, {Name: "clock"}} }, ErrDuplicateSection, "appears twice"},
		{"over the cap", func(f *File) { f.Sections = []Section{{Name: "big", Payload: make([]byte, DefaultLimit)}} }, ErrTooLarge, "over the 67108864-byte cap"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := ok()
			c.edit(f)
			b, err := f.Encode()
			assert.Nil(t, b)
			require.ErrorIs(t, err, c.kind)
			assert.Contains(t, err.Error(), c.msg)
		})
	}
	_, err := ok().Encode()
	assert.NoError(t, err)
}

// TestDecodeRefuses is the table of whole-file refusals: each input is
// refused with the right kind and a message that says what to do.
func TestDecodeRefuses(t *testing.T) {
	valid := encode(t, sampleFile(t))
	edit := func(fn func(b []byte) []byte) []byte { return fn(bytes.Clone(valid)) }
	cases := []struct {
		name  string
		in    []byte
		limit int64
		kind  error
		msgs  []string
	}{
		{"empty file", nil, 0, ErrTruncated, []string{"state file is empty", "do not resume from it; the guest's memory is untouched"}},
		{"magic prefix only", []byte("PMVM"), 0, ErrTruncated, []string{"truncated (4 bytes"}},
		{"a TOML config", []byte("name = \"demo\"\nvcpus = 2\n"), 0, ErrNotStateFile, []string{"is not a pmvm state file", `"name = \""`, "check the path"}},
		{"an ELF binary", append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 100)...), 0, ErrNotStateFile, []string{"is not a pmvm state file"}},
		{"short garbage", []byte("GIF"), 0, ErrNotStateFile, []string{"is not a pmvm state file"}},
		{"bad magic, valid rest", edit(func(b []byte) []byte { b[0] = 'X'; return b }), 0, ErrNotStateFile, []string{`begins with "XMVMSTAT"`}},
		{"unknown major 2", edit(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[offMajor:], 2); return reseal(b) }), 0, ErrVersion,
			[]string{"state file format 2.x is newer than this pmvm understands (1.x): use the pmvm that wrote it or a newer one"}},
		{"unknown major 3, rest garbage", append([]byte("PMVMSTAT\x03\x00"), bytes.Repeat([]byte{0xee}, 50)...), 0, ErrVersion,
			[]string{"format 3.x is newer"}},
		{"major 0", edit(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[offMajor:], 0); return b }), 0, ErrVersion,
			[]string{"format 0.x is older than this pmvm understands (1.x)"}},
		{"fixed header bit flip", edit(func(b []byte) []byte { b[offTotal] ^= 0x10; return b }), 0, ErrChecksum,
			[]string{"state file is corrupt (checksum mismatch", "fixed header", "do not resume from it; the guest's memory is untouched"}},
		{"payload bit flip", edit(func(b []byte) []byte { b[len(b)/2] ^= 1; return b }), 0, ErrChecksum,
			[]string{"state file is corrupt (checksum mismatch: SHA-256", "do not resume from it; the guest's memory is untouched"}},
		{"trailer bit flip", edit(func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }), 0, ErrChecksum, []string{"SHA-256"}},
		{"over a small cap", valid, 100, ErrTooLarge, []string{"over the 100-byte cap", "read it with a larger limit"}},
		{"trailing bytes", append(bytes.Clone(valid), 0), 0, ErrMalformed, []string{"1 bytes follow the end of the file"}},
		{"total length below the minimum", edit(func(b []byte) []byte { setTotal(b, 40); return b[:40] }), 0, ErrMalformed,
			[]string{"shorter than the smallest state file"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Decode(c.in, c.limit)
			assert.Nil(t, f)
			require.ErrorIs(t, err, c.kind)
			var se *Error
			require.True(t, errors.As(err, &se), "typed *Error")
			for _, m := range c.msgs {
				assert.Contains(t, err.Error(), m)
			}
		})
	}
}

// TestDecodeTruncatedAtEveryOffset proves that every proper prefix of a
// valid file (a copy or write cut short anywhere) is refused as truncated,
// never accepted and never misreported as another kind.
func TestDecodeTruncatedAtEveryOffset(t *testing.T) {
	b := encode(t, sampleFile(t))
	for n := 0; n < len(b); n++ {
		f, err := Decode(b[:n], 0)
		if !assert.ErrorIs(t, err, ErrTruncated, "prefix of %d bytes", n) {
			continue
		}
		assert.Nil(t, f)
		assert.Contains(t, err.Error(), "do not resume from it")
		if n >= fixedLen {
			assert.Contains(t, err.Error(), "its header says")
		}
	}
}

// TestDecodeBitFlips flips every bit of a valid file in turn and proves each
// is refused: in the magic as not a state file, in the major version as an
// unknown version, anywhere else (lengths included, thanks to the fixed
// header's CRC) as a checksum mismatch.
func TestDecodeBitFlips(t *testing.T) {
	b := encode(t, sampleFile(t))
	for i := range b {
		for bit := 0; bit < 8; bit++ {
			c := bytes.Clone(b)
			c[i] ^= 1 << bit
			f, err := Decode(c, 0)
			require.Nil(t, f, "flip at byte %d bit %d accepted", i, bit)
			want := ErrChecksum
			switch {
			case i < offMajor:
				want = ErrNotStateFile
			case i < offMinor:
				want = ErrVersion
			}
			require.ErrorIs(t, err, want, "flip at byte %d bit %d", i, bit)
			if want == ErrChecksum {
				require.Contains(t, err.Error(), "state file is corrupt (checksum mismatch")
			}
		}
	}
}

// TestDecodeLengthFieldsFailFast proves that absurd length fields, even in a
// file whose checksums were recomputed to match, are refused by comparing
// them with the bytes that remain, without allocating what they claim: a
// 2^62-byte section costs a few small allocations, not an exabyte.
func TestDecodeLengthFieldsFailFast(t *testing.T) {
	valid := encode(t, sampleFile(t))
	clock := sectionOffset(t, valid, "clock")
	cases := []struct {
		name string
		edit func(b []byte) []byte
		kind error
		msg  string
	}{
		{"section payload length 2^62", func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[clock+1+len("clock")+4:], 1<<62)
			return reseal(b)
		}, ErrMalformed, `section "clock" claims 4611686018427387904 payload bytes`},
		{"section payload length 2^64-1", func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[clock+1+len("clock")+4:], ^uint64(0))
			return reseal(b)
		}, ErrMalformed, "payload bytes but only"},
		{"section count 2^32-1", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[sectionCountOffset(b):], ^uint32(0))
			return reseal(b)
		}, ErrMalformed, "4294967295 sections, over the maximum"},
		{"section count that cannot fit", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[sectionCountOffset(b):], MaxSections)
			return reseal(b)
		}, ErrMalformed, "cannot fit"},
		{"header block length 2^32-1", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[fixedLen:], ^uint32(0))
			return reseal(b)
		}, ErrMalformed, "header block claims 4294967295 bytes"},
		{"vm name length 65535", func(b []byte) []byte {
			at := fixedLen + 4 + headerFixedLen + 2 + len("v0.4.0-test")
			binary.LittleEndian.PutUint16(b[at:], 0xffff)
			return reseal(b)
		}, ErrMalformed, "VM name claims 65535 bytes"},
		{"total length 2^62", func(b []byte) []byte { setTotal(b, 1<<62); return reseal(b) }, ErrTooLarge, "its header says 4611686018427387904 bytes"},
		{"total length 2^62, header CRC not recomputed", func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[offTotal:], 1<<62)
			return b
		}, ErrChecksum, "fixed header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.edit(bytes.Clone(valid))
			_, err := Decode(in, 0)
			require.ErrorIs(t, err, c.kind)
			assert.Contains(t, err.Error(), c.msg)
			allocs := testing.AllocsPerRun(20, func() { Decode(in, 0) })
			assert.LessOrEqual(t, allocs, 40.0, "allocations per refused Decode")
			n := bytesAllocated(func() { Decode(in, 0) })
			assert.Less(t, n, uint64(4*len(in)+16<<10), "bytes allocated per refused Decode")
		})
	}
}

// TestDecodeMalformed proves that a file whose checksums match but whose
// structure breaks the rules (a writer's bug) is refused as malformed, with
// the precise cause also matchable: duplicate and invalid names included.
func TestDecodeMalformed(t *testing.T) {
	valid := encode(t, sampleFile(t))
	v1 := sectionOffset(t, valid, "vcpu/1")
	cases := []struct {
		name  string
		edit  func(b []byte) []byte
		cause error
		msg   string
	}{
		{"duplicate section name", func(b []byte) []byte { b[v1+len("vcpu/1")] = '0'; return reseal(b) },
			ErrDuplicateSection, `section "vcpu/0" appears twice`},
		{"upper-case section name", func(b []byte) []byte { b[v1+1] = 'V'; return reseal(b) },
			ErrInvalidName, `section name "Vcpu/1" is invalid`},
		{"empty section name", func(b []byte) []byte {
			// Rewrite "marker" (the last section, empty payload) as a
			// zero-length name followed by padding that keeps lengths.
			m := sectionOffset(t, b, "marker")
			b[m] = 0
			return reseal(b)
		}, ErrInvalidName, `section name "" is invalid`},
		{"nanoseconds over 1e9", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[fixedLen+4+8:], 1e9)
			return reseal(b)
		}, nil, "creation time has 1000000000 nanoseconds"},
		{"control characters in the VM name", func(b []byte) []byte {
			i := bytes.Index(b, []byte("demo"))
			b[i] = 0x1b
			return reseal(b)
		}, nil, "contains control characters"},
		{"bytes after the last section", func(b []byte) []byte {
			at := sectionCountOffset(b)
			binary.LittleEndian.PutUint32(b[at:], binary.LittleEndian.Uint32(b[at:])-1)
			return reseal(b)
		}, nil, "bytes after the last section"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Decode(c.edit(bytes.Clone(valid)), 0)
			assert.Nil(t, f)
			require.ErrorIs(t, err, ErrMalformed)
			if c.cause != nil {
				assert.ErrorIs(t, err, c.cause)
			}
			assert.Contains(t, err.Error(), c.msg)
			assert.Contains(t, err.Error(), "its checksums match, so the pmvm that wrote it has a bug")
		})
	}
}

// TestDecodeNewerMinor proves forward compatibility within a major: a 1.7
// file with an extra header field and a section this pmvm has never heard
// of is read; the known parts decode, the unknown section is kept and
// listed, and a restorer asking only for known sections is unaffected.
func TestDecodeNewerMinor(t *testing.T) {
	f := sampleFile(t)
	require.NoError(t, f.AddJSON("virtio-fs@0xd0000000", 1, map[string]string{"tag": "shared"}))
	b := encode(t, f)
	binary.LittleEndian.PutUint16(b[offMinor:], 7)
	// Append a 6-byte field a 1.7 writer would put at the end of the header block.
	hlen := binary.LittleEndian.Uint32(b[fixedLen:])
	end := fixedLen + 4 + int(hlen)
	b = append(b[:end], append([]byte("newfld"), b[end:]...)...)
	binary.LittleEndian.PutUint32(b[fixedLen:], hlen+6)
	setTotal(b, uint64(len(b)))
	reseal(b)

	got, err := Decode(b, 0)
	require.NoError(t, err)
	assert.Equal(t, Version{1, 7}, got.Header.Format)
	assert.Equal(t, f.Header.VMName, got.Header.VMName)
	assert.Equal(t, f.Header.ConfigFingerprint, got.Header.ConfigFingerprint)
	assert.Equal(t, f.Sections, got.Sections)
	s, err := got.Need("uart@0x3f8", 2)
	require.NoError(t, err)
	var u uartRecord
	require.NoError(t, s.DecodeJSON(&u))
	var out bytes.Buffer
	got.Describe(&out)
	assert.Contains(t, out.String(), "virtio-fs@0xd0000000")
	assert.Contains(t, out.String(), "format:       1.7")
}

// TestNeed proves a restorer gets a clear refusal for a missing section or
// one newer than it understands, and still gets older versions.
func TestNeed(t *testing.T) {
	f := sampleFile(t)
	_, err := f.Need("i8042@0x60", 1)
	require.ErrorIs(t, err, ErrMissingSection)
	assert.Contains(t, err.Error(), `no section "i8042@0x60"`)
	_, err = f.Need("uart@0x3f8", 1)
	require.ErrorIs(t, err, ErrSectionVersion)
	assert.Contains(t, err.Error(), `section "uart@0x3f8" is version 2, newer than this pmvm understands (up to 1): use the pmvm that wrote it or a newer one`)
	s, err := f.Need("uart@0x3f8", 3)
	require.NoError(t, err)
	assert.Equal(t, uint32(2), s.Version)
}

// TestGoldenFile proves that a file written by format 1.0 stays readable
// and that this pmvm still writes exactly those bytes: the committed file
// is the compatibility contract. Regenerate (only on a deliberate format
// change) with: go test ./state -run TestGoldenFile -update
func TestGoldenFile(t *testing.T) {
	path := filepath.Join("testdata", "golden-1.0.pmvmstate")
	b := encode(t, sampleFile(t))
	if *update {
		require.NoError(t, os.WriteFile(path, b, 0o644))
	}
	golden, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, golden, b, "encoding changed: bump the format version instead")
	got, err := Decode(golden, 0)
	require.NoError(t, err)
	assert.Equal(t, withFormat(sampleFile(t)), got)
	// Spot-check the layout against the package documentation.
	assert.Equal(t, "PMVMSTAT", string(golden[:8]))
	assert.Equal(t, uint16(1), binary.LittleEndian.Uint16(golden[8:]))
	assert.Equal(t, uint16(0), binary.LittleEndian.Uint16(golden[10:]))
	assert.Equal(t, uint64(len(golden)), binary.LittleEndian.Uint64(golden[12:]))
	assert.Equal(t, int64(1773500966), int64(binary.LittleEndian.Uint64(golden[28:])))
	assert.Equal(t, byte(0xa0), golden[40])
	assert.Equal(t, uint16(len("v0.4.0-test")), binary.LittleEndian.Uint16(golden[72:]))
	assert.Equal(t, uint32(len(sampleFile(t).Sections)), binary.LittleEndian.Uint32(golden[sectionCountOffset(golden):]))
	assert.Equal(t, []byte("\x07machine"), golden[sectionCountOffset(golden)+4:][:8])
}
