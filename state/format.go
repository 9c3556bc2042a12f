package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"time"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// The current format version. Bump the minor when adding sections or
// appending header fields; bump the major for anything an older reader
// would misread.
const (
	FormatMajor uint16 = 1
	FormatMinor uint16 = 0
)

// DefaultLimit is the size cap ReadFile applies and Decode uses for a limit
// of 0. Encode refuses to produce a file larger than it, so every file pmvm
// writes can be read back with the default.
const DefaultLimit int64 = 64 << 20

const magic = "PMVMSTAT"

// Offsets and sizes of the layout (see the package documentation).
const (
	offMajor     = 8
	offMinor     = 10
	offTotal     = 12
	offHeaderCRC = 20
	fixedLen     = 24 // magic, major, minor, total length, CRC-32C
	trailerLen   = sha256.Size
	// headerFixedLen is the fixed part of the header block: created
	// (8 + 4) and the fingerprint (32).
	headerFixedLen = 8 + 4 + 32
	// minHeaderBlock has the three strings empty.
	minHeaderBlock = headerFixedLen + 3*2
	// minSectionLen is a section with a 1-byte name and no payload.
	minSectionLen = 1 + 1 + 4 + 8
	// minFileLen is a file with an empty header block and no sections.
	minFileLen = fixedLen + 4 + minHeaderBlock + 4 + trailerLen
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Encode serializes f in the current format version.
func (f *File) Encode() ([]byte, error) {
	h := &f.Header
	if msg := h.check(); msg != "" {
		return nil, newErr(ErrInvalidHeader, "cannot write state file: %s", msg)
	}
	if len(f.Sections) > MaxSections {
		return nil, newErr(ErrTooLarge, "cannot write state file: %d sections, over %d", len(f.Sections), MaxSections)
	}
	headerLen := minHeaderBlock + len(h.PMVMVersion) + len(h.VMName) + len(h.Mode)
	total := uint64(fixedLen + 4 + headerLen + 4 + trailerLen)
	seen := make(map[string]struct{}, len(f.Sections))
	for i := range f.Sections {
		s := &f.Sections[i]
		if !ValidName(s.Name) {
			return nil, errInvalidName(s.Name)
		}
		if _, dup := seen[s.Name]; dup {
			return nil, errDuplicate(s.Name)
		}
		seen[s.Name] = struct{}{}
		total += uint64(minSectionLen - 1 + len(s.Name) + len(s.Payload))
	}
	if total > uint64(DefaultLimit) {
		return nil, errTooLarge("it would be", total, uint64(DefaultLimit))
	}

	b := make([]byte, 0, total)
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint16(b, FormatMajor)
	b = binary.LittleEndian.AppendUint16(b, FormatMinor)
	b = binary.LittleEndian.AppendUint64(b, total)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[:offHeaderCRC], castagnoli))

	b = binary.LittleEndian.AppendUint32(b, uint32(headerLen))
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Created.Unix()))
	b = binary.LittleEndian.AppendUint32(b, uint32(h.Created.Nanosecond()))
	b = append(b, h.ConfigFingerprint[:]...)
	for _, s := range []string{h.PMVMVersion, h.VMName, string(h.Mode)} {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}

	b = binary.LittleEndian.AppendUint32(b, uint32(len(f.Sections)))
	for i := range f.Sections {
		s := &f.Sections[i]
		b = append(b, byte(len(s.Name)))
		b = append(b, s.Name...)
		b = binary.LittleEndian.AppendUint32(b, s.Version)
		b = binary.LittleEndian.AppendUint64(b, uint64(len(s.Payload)))
		b = append(b, s.Payload...)
	}
	sum := sha256.Sum256(b)
	b = append(b, sum[:]...)
	if uint64(len(b)) != total {
		panic("state: encoded length does not match the computed total")
	}
	return b, nil
}

// Decode parses a state file of at most limit bytes (DefaultLimit if limit
// is 0 or negative). It refuses, with an *Error, before allocating anything
// a length field asks for: the checks run in the order the package
// documentation lists, and every length is compared with the bytes that
// remain. The returned File does not alias b.
func Decode(b []byte, limit int64) (*File, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	have := uint64(len(b))
	if have > uint64(limit) {
		return nil, errTooLarge("it is", have, uint64(limit))
	}
	if have < uint64(len(magic)) {
		if have == 0 || magic[:have] == string(b) {
			return nil, errTruncated(have, 0)
		}
		return nil, errNotStateFile(b)
	}
	if string(b[:len(magic)]) != magic {
		return nil, errNotStateFile(b[:len(magic)])
	}
	if have < offMinor {
		return nil, errTruncated(have, 0)
	}
	if major := binary.LittleEndian.Uint16(b[offMajor:]); major != FormatMajor {
		return nil, errVersion(major)
	}
	if have < fixedLen {
		return nil, errTruncated(have, 0)
	}
	if crc32.Checksum(b[:offHeaderCRC], castagnoli) != binary.LittleEndian.Uint32(b[offHeaderCRC:]) {
		return nil, errChecksum("CRC-32C of the fixed header, bytes 0-19")
	}
	total := binary.LittleEndian.Uint64(b[offTotal:])
	switch {
	case total > uint64(limit):
		return nil, errTooLarge("its header says", total, uint64(limit))
	case total > have:
		return nil, errTruncated(have, total)
	case total < have:
		return nil, errMalformed(int(total), "%d bytes follow the end of the file (its header says %d bytes)", have-total, total)
	case total < minFileLen:
		return nil, errMalformed(offTotal, "total length %d is shorter than the smallest state file (%d bytes)", total, minFileLen)
	}
	body := b[:total-trailerLen]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], b[total-trailerLen:]) {
		return nil, errChecksum("SHA-256 of the whole file")
	}

	// The checksums match: from here on a bad structure is a writer's bug.
	// One copy of the input, which the payloads share, bounds what the
	// parse allocates by the input size.
	body = bytes.Clone(body)
	r := reader{b: body, off: fixedLen}
	f := &File{}
	f.Header.Format = Version{FormatMajor, binary.LittleEndian.Uint16(b[offMinor:])}
	if err := f.decodeHeader(&r); err != nil {
		return nil, err
	}
	if err := f.decodeSections(&r); err != nil {
		return nil, err
	}
	if r.remaining() != 0 {
		return nil, errMalformed(r.off, "%d bytes after the last section", r.remaining())
	}
	return f, nil
}

func (f *File) decodeHeader(r *reader) error {
	start := r.off
	hlen, ok := r.u32()
	if !ok {
		return errMalformed(start, "header block length runs past the end")
	}
	if uint64(hlen) > uint64(r.remaining()) {
		return errMalformed(start, "header block claims %d bytes but only %d remain", hlen, r.remaining())
	}
	if hlen < minHeaderBlock {
		return errMalformed(start, "header block is %d bytes, shorter than its fixed fields (%d)", hlen, minHeaderBlock)
	}
	end := r.off + int(hlen)
	hr := reader{b: r.b[:end], off: r.off}
	sec, _ := hr.u64()
	nsec, _ := hr.u32()
	if nsec >= 1e9 {
		return errMalformed(hr.off-4, "creation time has %d nanoseconds", nsec)
	}
	h := &f.Header
	h.Created = time.Unix(int64(sec), int64(nsec)).UTC()
	fp, _ := hr.bytes(32)
	copy(h.ConfigFingerprint[:], fp)
	var strs [3]string
	for i, field := range []string{"pmvm version", "VM name", "mode"} {
		at := hr.off
		n, ok := hr.u16()
		if !ok {
			return errMalformed(at, "%s length runs past the header block", field)
		}
		s, ok := hr.bytes(uint64(n))
		if !ok {
			return errMalformed(at, "%s claims %d bytes but the header block has %d left", field, n, hr.remaining())
		}
		strs[i] = string(s)
	}
	h.PMVMVersion, h.VMName, h.Mode = strs[0], strs[1], memspec.Mode(strs[2])
	if msg := h.check(); msg != "" {
		return errMalformed(start, "%s", msg)
	}
	// Fields a newer minor appended end at end; skip them.
	r.off = end
	return nil
}

func (f *File) decodeSections(r *reader) error {
	at := r.off
	n, ok := r.u32()
	if !ok {
		return errMalformed(at, "section count runs past the end")
	}
	if n > MaxSections {
		return errMalformed(at, "%d sections, over the maximum %d", n, MaxSections)
	}
	if uint64(n)*minSectionLen > uint64(r.remaining()) {
		return errMalformed(at, "%d sections cannot fit in the %d bytes that remain", n, r.remaining())
	}
	if n == 0 {
		return nil
	}
	f.Sections = make([]Section, 0, n)
	seen := make(map[string]struct{}, n)
	for i := uint32(0); i < n; i++ {
		at := r.off
		nameLen, ok := r.u8()
		if !ok {
			return errMalformed(at, "section %d runs past the end", i)
		}
		nameB, ok := r.bytes(uint64(nameLen))
		if !ok {
			return errMalformed(at, "section %d name claims %d bytes but only %d remain", i, nameLen, r.remaining())
		}
		name := string(nameB)
		if !ValidName(name) {
			e := errMalformed(at, "section %d: %s", i, errInvalidName(name).Msg)
			e.Cause = ErrInvalidName
			return e
		}
		if _, dup := seen[name]; dup {
			e := errMalformed(at, "section %d: %s", i, errDuplicate(name).Msg)
			e.Cause = ErrDuplicateSection
			return e
		}
		seen[name] = struct{}{}
		version, ok1 := r.u32()
		plen, ok2 := r.u64()
		if !ok1 || !ok2 {
			return errMalformed(at, "section %q header runs past the end", name)
		}
		payload, ok := r.bytes(plen)
		if !ok {
			return errMalformed(at, "section %q claims %d payload bytes but only %d remain", name, plen, r.remaining())
		}
		if plen == 0 {
			payload = nil // as Add stores an empty payload
		}
		f.Sections = append(f.Sections, Section{Name: name, Version: version, Payload: payload})
	}
	return nil
}

// reader walks a byte slice; every read checks the bytes that remain first.
type reader struct {
	b   []byte
	off int
}

func (r *reader) remaining() int { return len(r.b) - r.off }

// bytes returns the next n bytes as a full-capacity-limited subslice, so an
// append by the caller cannot overwrite what follows.
func (r *reader) bytes(n uint64) ([]byte, bool) {
	if n > uint64(r.remaining()) {
		return nil, false
	}
	s := r.b[r.off : r.off+int(n) : r.off+int(n)]
	r.off += int(n)
	return s, true
}

func (r *reader) u8() (uint8, bool) {
	s, ok := r.bytes(1)
	if !ok {
		return 0, false
	}
	return s[0], true
}

func (r *reader) u16() (uint16, bool) {
	s, ok := r.bytes(2)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint16(s), true
}

func (r *reader) u32() (uint32, bool) {
	s, ok := r.bytes(4)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint32(s), true
}

func (r *reader) u64() (uint64, bool) {
	s, ok := r.bytes(8)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint64(s), true
}
