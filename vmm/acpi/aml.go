package acpi

// A small encoder for ACPI Machine Language (ACPI 6.5, chapter 20), just large
// enough for pmvm's DSDT: named objects, packages, integer and string
// constants, EISA ids, devices, scopes, simple methods and resource templates.
// (QEMU's hw/acpi/aml-build.c and rust-vmm's acpi_tables are the models.)
//
// Every function returns the encoded bytes of one AML term, so terms compose
// by nesting calls the way ASL nests braces:
//
//	AMLScope("_SB",
//		AMLDevice("COM1",
//			AMLName("_HID", AMLEISAID("PNP0501")),
//			AMLName("_STA", AMLInteger(0x0F))))
//
// The encodings follow what iasl (ACPICA's compiler) emits for the same ASL,
// so the tests compare exact bytes with iasl output. Names and EISA ids are
// compile-time constants of the caller; a malformed one is a programming
// error and makes the encoder panic with a message naming the bad input.

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// AML opcodes and prefixes (ACPI 6.5, section 20.3 "AML Byte Stream Byte Values").
const (
	zeroOp          = 0x00
	oneOp           = 0x01
	nameOp          = 0x08
	bytePrefix      = 0x0A
	wordPrefix      = 0x0B
	dWordPrefix     = 0x0C
	stringPrefix    = 0x0D
	qWordPrefix     = 0x0E
	scopeOp         = 0x10
	bufferOp        = 0x11
	packageOp       = 0x12
	methodOp        = 0x14
	dualNamePrefix  = 0x2E
	multiNamePrefix = 0x2F
	extOpPrefix     = 0x5B
	deviceOp        = 0x82 // after extOpPrefix
	rootChar        = 0x5C // '\'
	parentPrefix    = 0x5E // '^'
	returnOp        = 0xA4
	onesOp          = 0xFF
)

// AMLPkgLength encodes an AML PkgLength for a body of bodyLen bytes (ACPI 6.5,
// section 20.2.4). The encoded value counts the PkgLength bytes themselves plus
// the body, so the form (1 to 4 bytes) is chosen on the total:
//
//	total <= 0x3F:      1 byte, bits 0-5 hold the length
//	total <= 0xFFF:     2 bytes: lead byte 0x40 | length[3:0], then length[11:4]
//	total <= 0xFFFFF:   3 bytes: lead byte 0x80 | length[3:0], then length[19:4]
//	total <= 0xFFFFFFF: 4 bytes: lead byte 0xC0 | length[3:0], then length[27:4]
//
// It panics if bodyLen is negative or the package would exceed 2^28-1 bytes.
func AMLPkgLength(bodyLen int) []byte {
	if bodyLen < 0 {
		panic(fmt.Sprintf("acpi: AML: negative PkgLength body %d", bodyLen))
	}
	if total := bodyLen + 1; total <= 0x3F {
		return []byte{byte(total)}
	}
	for n := 1; n <= 3; n++ { // n = number of bytes following the lead byte
		total := bodyLen + 1 + n
		if total < 1<<(4+8*n) {
			b := make([]byte, 1+n)
			b[0] = byte(n<<6) | byte(total&0x0F)
			for i := 0; i < n; i++ {
				b[1+i] = byte(total >> (4 + 8*i))
			}
			return b
		}
	}
	panic(fmt.Sprintf("acpi: AML: package body of %d bytes exceeds the 2^28-1 byte PkgLength limit", bodyLen))
}

// withPkgLength returns op || AMLPkgLength(len(body)) || body.
func withPkgLength(op []byte, body []byte) []byte {
	out := append([]byte{}, op...)
	out = append(out, AMLPkgLength(len(body))...)
	return append(out, body...)
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// AMLNameSeg pads a 1 to 4 character name segment with '_' (ASL "KBD" is the
// NameSeg "KBD_"). It panics on an empty, too long or ill-formed segment: the
// first character must be 'A'-'Z' or '_', the others 'A'-'Z', '0'-'9' or '_'.
func AMLNameSeg(seg string) []byte {
	if len(seg) == 0 || len(seg) > 4 {
		panic(fmt.Sprintf("acpi: AML: name segment %q must have 1 to 4 characters", seg))
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		ok := c == '_' || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			panic(fmt.Sprintf("acpi: AML: name segment %q has invalid character %q at %d", seg, c, i))
		}
	}
	return []byte(seg + strings.Repeat("_", 4-len(seg)))
}

// AMLNameString encodes an ASL name path (ACPI 6.5, section 20.2.2):
// an optional root prefix `\` or parent prefixes `^`, then segments separated by
// dots. One segment is encoded bare, two with dualNamePrefix, more with
// multiNamePrefix and a count; a bare prefix with no segment ends in NullName.
//
//	"_S5"         -> 5F 53 35 5F
//	`\_SB`        -> 5C 5F 53 42 5F
//	`\_SB.COM1`   -> 5C 2E 5F 53 42 5F 43 4F 4D 31
func AMLNameString(path string) []byte {
	var out []byte
	rest := path
	if strings.HasPrefix(rest, `\`) {
		out = append(out, rootChar)
		rest = rest[1:]
	} else {
		for strings.HasPrefix(rest, "^") {
			out = append(out, parentPrefix)
			rest = rest[1:]
		}
	}
	if rest == "" {
		if len(out) == 0 {
			panic("acpi: AML: empty name path")
		}
		return append(out, 0x00) // NullName
	}
	segs := strings.Split(rest, ".")
	switch {
	case len(segs) == 2:
		out = append(out, dualNamePrefix)
	case len(segs) > 2:
		if len(segs) > 255 {
			panic(fmt.Sprintf("acpi: AML: name path %q has more than 255 segments", path))
		}
		out = append(out, multiNamePrefix, byte(len(segs)))
	}
	for _, s := range segs {
		out = append(out, AMLNameSeg(s)...)
	}
	return out
}

// AMLInteger encodes an integer constant the way iasl does: Zero, One and Ones
// opcodes for 0, 1 and all-ones, otherwise the smallest of bytePrefix,
// wordPrefix, dWordPrefix and qWordPrefix that holds v.
//
//	Zero        -> 00
//	0x0F        -> 0A 0F
//	0x03F8      -> 0B F8 03
//	0xFEC00000  -> 0C 00 00 C0 FE
func AMLInteger(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{zeroOp}
	case v == 1:
		return []byte{oneOp}
	case v == ^uint64(0):
		return []byte{onesOp}
	case v <= 0xFF:
		return []byte{bytePrefix, byte(v)}
	case v <= 0xFFFF:
		return binary.LittleEndian.AppendUint16([]byte{wordPrefix}, uint16(v))
	case v <= 0xFFFFFFFF:
		return binary.LittleEndian.AppendUint32([]byte{dWordPrefix}, uint32(v))
	default:
		return binary.LittleEndian.AppendUint64([]byte{qWordPrefix}, v)
	}
}

// AMLByte, AMLWord, AMLDWord and AMLQWord encode a constant with an explicit
// prefix (no Zero/One optimisation), for fields whose width matters to the
// reader.
func AMLByte(v uint8) []byte   { return []byte{bytePrefix, v} }
func AMLWord(v uint16) []byte  { return binary.LittleEndian.AppendUint16([]byte{wordPrefix}, v) }
func AMLDWord(v uint32) []byte { return binary.LittleEndian.AppendUint32([]byte{dWordPrefix}, v) }
func AMLQWord(v uint64) []byte { return binary.LittleEndian.AppendUint64([]byte{qWordPrefix}, v) }

// AMLString encodes an ASCII string constant: StringPrefix, the bytes, a NUL.
// It panics if s holds a NUL or a non-ASCII byte (AML strings are 0x01-0x7F).
//
//	"ACPI0007" -> 0D 41 43 50 49 30 30 30 37 00
func AMLString(s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] > 0x7F {
			panic(fmt.Sprintf("acpi: AML: string %q has byte 0x%02X at %d outside 0x01-0x7F", s, s[i], i))
		}
	}
	out := append([]byte{stringPrefix}, s...)
	return append(out, 0x00)
}

// ParseEISAID compresses a 7-character EISA PnP id ("PNP0501": three upper-case
// letters and four hex digits) into the 32-bit value ASL's AMLEISAID() produces:
// each letter is 5 bits (letter - 0x40), packed big-endian in the first two
// bytes, then the product number as two bytes, the four bytes stored in that
// order in memory. AMLEISAID("PNP0501") is 0x0105D041 (bytes 41 D0 05 01).
func ParseEISAID(id string) (uint32, error) {
	if len(id) != 7 {
		return 0, fmt.Errorf("EISA id %q must have 7 characters (3 letters, 4 hex digits)", id)
	}
	var b [4]byte
	var v uint16
	for i := 0; i < 3; i++ {
		c := id[i]
		if c < 'A' || c > 'Z' {
			return 0, fmt.Errorf("EISA id %q: character %d (%q) must be an upper-case letter", id, i, c)
		}
		v = v<<5 | uint16(c-0x40)
	}
	binary.BigEndian.PutUint16(b[0:2], v)
	for i := 3; i < 7; i++ {
		c := id[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("EISA id %q: character %d (%q) must be an upper-case hex digit", id, i, c)
		}
		b[2+(i-3)/2] |= d << (4 * (1 - (i-3)%2))
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

// AMLEISAID encodes ASL EisaId(id) as a DWord constant; it panics on a
// malformed id.
//
//	EisaId ("PNP0501") -> 0C 41 D0 05 01
func AMLEISAID(id string) []byte {
	v, err := ParseEISAID(id)
	if err != nil {
		panic("acpi: AML: " + err.Error())
	}
	return AMLDWord(v)
}

// AMLName encodes ASL Name(path, obj): NameOp, the name, the data object.
//
//	Name (_STA, 0x0F) -> 08 5F 53 54 41 0A 0F
func AMLName(path string, obj []byte) []byte {
	return concat([]byte{nameOp}, AMLNameString(path), obj)
}

// AMLPackage encodes ASL Package(n) {elems...} with n = len(elems): PackageOp,
// PkgLength, NumElements (one byte), the elements. It panics above 255
// elements (that needs VarPackageOp, which this encoder does not need).
//
//	Package (0x04) { 0x07, 0x07, Zero, Zero } -> 12 08 04 0A 07 0A 07 00 00
func AMLPackage(elems ...[]byte) []byte {
	if len(elems) > 255 {
		panic(fmt.Sprintf("acpi: AML: package of %d elements needs VarPackageOp", len(elems)))
	}
	body := concat(append([][]byte{{byte(len(elems))}}, elems...)...)
	return withPkgLength([]byte{packageOp}, body)
}

// AMLBuffer encodes ASL Buffer() {data...}: BufferOp, PkgLength, the size as
// an integer, the bytes.
//
//	Buffer (0x02) { 0x79, 0x00 } -> 11 05 0A 02 79 00
func AMLBuffer(data []byte) []byte {
	body := concat(AMLInteger(uint64(len(data))), data)
	return withPkgLength([]byte{bufferOp}, body)
}

// AMLScope encodes ASL Scope(path) {terms...}.
//
//	Scope (\_SB) {} -> 10 06 5C 5F 53 42 5F
func AMLScope(path string, terms ...[]byte) []byte {
	body := concat(append([][]byte{AMLNameString(path)}, terms...)...)
	return withPkgLength([]byte{scopeOp}, body)
}

// AMLDevice encodes ASL Device(path) {terms...}: ExtOpPrefix, DeviceOp, PkgLength,
// the name, the terms.
//
//	Device (KBD) {} -> 5B 82 05 4B 42 44 5F
func AMLDevice(path string, terms ...[]byte) []byte {
	body := concat(append([][]byte{AMLNameString(path)}, terms...)...)
	return withPkgLength([]byte{extOpPrefix, deviceOp}, body)
}

// AMLMethod encodes ASL Method(path, args, NotSerialized or Serialized) {terms...}.
// It panics if args is not 0 to 7.
//
//	Method (_STA, 0, NotSerialized) { Return (0x0F) } -> 14 09 5F 53 54 41 00 A4 0A 0F
func AMLMethod(path string, args int, serialized bool, terms ...[]byte) []byte {
	if args < 0 || args > 7 {
		panic(fmt.Sprintf("acpi: AML: method %q: %d arguments, must be 0 to 7", path, args))
	}
	flags := byte(args)
	if serialized {
		flags |= 1 << 3
	}
	body := concat(append([][]byte{AMLNameString(path), {flags}}, terms...)...)
	return withPkgLength([]byte{methodOp}, body)
}

// AMLReturn encodes ASL Return(obj).
func AMLReturn(obj []byte) []byte { return concat([]byte{returnOp}, obj) }
