package acpi

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The expected bytes below are what iasl 20200925 (Debian acpica-tools)
// emits for the ASL in the comment beside them, in the style of rust-vmm's
// acpi_tables tests.

func TestAMLPkgLength(t *testing.T) {
	for _, tc := range []struct {
		body int
		want []byte
	}{
		{0, []byte{0x01}},
		{62, []byte{0x3F}},                               // total 63: the largest 1-byte form
		{63, []byte{0x41, 0x04}},                         // total 65 = 0x041: 2-byte form
		{64, []byte{0x42, 0x04}},                         // total 66 = 0x042
		{4093, []byte{0x4F, 0xFF}},                       // total 4095 = 0xFFF: the largest 2-byte form
		{4094, []byte{0x81, 0x00, 0x01}},                 // total 4097 = 0x1001: 3-byte form
		{4095, []byte{0x82, 0x00, 0x01}},                 // total 4098 = 0x1002
		{4096, []byte{0x83, 0x00, 0x01}},                 // total 4099 = 0x1003
		{1<<20 - 4, []byte{0x8F, 0xFF, 0xFF}},            // total 0xFFFFF: the largest 3-byte form
		{1<<20 - 3, []byte{0xC1, 0x00, 0x00, 0x01}},      // total 0x100001: 4-byte form
		{1<<28 - 5, []byte{0xCF, 0xFF, 0xFF, 0xFF}},      // total 0xFFFFFFF: the largest PkgLength
		{0x12345, []byte{0x88, 0x34, 0x12}},              // total 0x12348
		{0x123456, []byte{0xCA, 0x45, 0x23, 0x01}},       // total 0x12345A
		{0x0ABCDEF0 - 4, []byte{0xC0, 0xEF, 0xCD, 0xAB}}, // total 0x0ABCDEF0
	} {
		got := AMLPkgLength(tc.body)
		assert.Equal(t, tc.want, got, "body %d", tc.body)
		assert.Equal(t, tc.body+len(got), decodePkgLength(t, got), "body %d: decoded length", tc.body)
	}
	assert.Panics(t, func() { AMLPkgLength(1<<28 - 4) })
	assert.Panics(t, func() { AMLPkgLength(-1) })
}

// decodePkgLength is the reader's side (ACPICA's AcpiPsGetNextPackageLength).
func decodePkgLength(t *testing.T, b []byte) int {
	n := int(b[0] >> 6)
	require.Len(t, b, 1+n)
	if n == 0 {
		return int(b[0] & 0x3F)
	}
	v := int(b[0] & 0x0F)
	for i := 0; i < n; i++ {
		v |= int(b[1+i]) << (4 + 8*i)
	}
	return v
}

// bufferOf returns n bytes 0, 1, 2, ... as in Buffer (n) {0x00, 0x01, ...}.
func bufferOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// TestBufferPkgLengthEdges checks whole Buffer encodings around the PkgLength
// boundaries against iasl: the body is the BufferSize term plus the data.
func TestAMLBufferPkgLengthEdges(t *testing.T) {
	for _, tc := range []struct {
		asl    string
		n      int
		prefix []byte
	}{
		// Buffer (60) {...}: body 62 (0A 3C + 60) -> PkgLength 3F
		{"Buffer (60)", 60, []byte{0x11, 0x3F, 0x0A, 0x3C}},
		// Buffer (61) {...}: body 63 -> PkgLength 41 04
		{"Buffer (61)", 61, []byte{0x11, 0x41, 0x04, 0x0A, 0x3D}},
		// Buffer (62) {...}: body 64 -> PkgLength 42 04
		{"Buffer (62)", 62, []byte{0x11, 0x42, 0x04, 0x0A, 0x3E}},
		// Buffer (4090) {...}: body 4093 (0B FA 0F + 4090) -> PkgLength 4F FF
		{"Buffer (4090)", 4090, []byte{0x11, 0x4F, 0xFF, 0x0B, 0xFA, 0x0F}},
		// Buffer (4091) {...}: body 4094 -> PkgLength 81 00 01
		{"Buffer (4091)", 4091, []byte{0x11, 0x81, 0x00, 0x01, 0x0B, 0xFB, 0x0F}},
		// Buffer (4092) {...}: body 4095 -> PkgLength 82 00 01
		{"Buffer (4092)", 4092, []byte{0x11, 0x82, 0x00, 0x01, 0x0B, 0xFC, 0x0F}},
		// Buffer (4093) {...}: body 4096 -> PkgLength 83 00 01
		{"Buffer (4093)", 4093, []byte{0x11, 0x83, 0x00, 0x01, 0x0B, 0xFD, 0x0F}},
	} {
		data := bufferOf(tc.n)
		got := AMLBuffer(data)
		assert.Equal(t, tc.prefix, got[:len(tc.prefix)], tc.asl)
		assert.Equal(t, data, got[len(tc.prefix):], tc.asl)
	}
}

func TestAMLNameString(t *testing.T) {
	for _, tc := range []struct {
		path string
		want []byte
	}{
		{"_S5", []byte{0x5F, 0x53, 0x35, 0x5F}},                  // _S5_
		{"KBD", []byte("KBD_")},                                  // padded with '_'
		{"COM1", []byte("COM1")},                                 // full segment
		{`\_SB`, []byte{0x5C, 0x5F, 0x53, 0x42, 0x5F}},           // \_SB_
		{`\_SB.COM2`, append([]byte{0x5C, 0x2E}, "_SB_COM2"...)}, // \ dualNamePrefix _SB_ COM2
		{"_SB.COM2", append([]byte{0x2E}, "_SB_COM2"...)},
		{`\_SB.ABCD.IJKL`, append([]byte{0x5C, 0x2F, 0x03}, "_SB_ABCDIJKL"...)}, // multiNamePrefix, 3 segments
		{"^^PCI0", append([]byte{0x5E, 0x5E}, "PCI0"...)},
		{`\`, []byte{0x5C, 0x00}}, // root: rootChar NullName
	} {
		assert.Equal(t, tc.want, AMLNameString(tc.path), tc.path)
	}
	for _, bad := range []string{"", "TOOLONG", "0ABC", "a", "AB-C", `\_SB..X`, "_SB."} {
		assert.Panics(t, func() { AMLNameString(bad) }, "%q", bad)
	}
}

func TestAMLIntegers(t *testing.T) {
	for _, tc := range []struct {
		v    uint64
		want []byte
	}{
		{0, []byte{0x00}},                   // Zero
		{1, []byte{0x01}},                   // One
		{2, []byte{0x0A, 0x02}},             // 0x02
		{0x0F, []byte{0x0A, 0x0F}},          // 0x0F
		{0xFF, []byte{0x0A, 0xFF}},          // 0xFF
		{0x100, []byte{0x0B, 0x00, 0x01}},   // 0x0100
		{0x03F8, []byte{0x0B, 0xF8, 0x03}},  // 0x03F8
		{0x10000, []byte{0x0C, 0, 0, 1, 0}}, // 0x00010000
		{0xFEC00000, []byte{0x0C, 0, 0, 0xC0, 0xFE}},
		{0x123456789A, []byte{0x0E, 0x9A, 0x78, 0x56, 0x34, 0x12, 0, 0, 0}}, // QWord
		{^uint64(0), []byte{0xFF}},                                          // Ones
	} {
		assert.Equal(t, tc.want, AMLInteger(tc.v), "0x%X", tc.v)
	}
	assert.Equal(t, []byte{0x0A, 0x00}, AMLByte(0))
	assert.Equal(t, []byte{0x0B, 0x01, 0x00}, AMLWord(1))
	assert.Equal(t, []byte{0x0C, 0x0F, 0, 0, 0}, AMLDWord(0x0F))
	assert.Equal(t, []byte{0x0E, 1, 0, 0, 0, 0, 0, 0, 0}, AMLQWord(1))
}

func TestAMLEISAID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want uint32
	}{
		{"PNP0501", 0x0105D041}, // 16550A UART
		{"PNP0303", 0x0303D041}, // IBM enhanced keyboard (i8042)
		{"PNP0B00", 0x000BD041}, // AT RTC
		{"PNP0A03", 0x030AD041}, // PCI host bridge
		{"PNP0C0C", 0x0C0CD041}, // power button
		{"QEM0002", 0x0200AD44}, // another vendor prefix
	} {
		v, err := ParseEISAID(tc.id)
		require.NoError(t, err, tc.id)
		assert.Equal(t, tc.want, v, "%s: got 0x%08X", tc.id, v)
	}
	// EisaId ("PNP0501") -> DWordConst 41 D0 05 01
	assert.Equal(t, []byte{0x0C, 0x41, 0xD0, 0x05, 0x01}, AMLEISAID("PNP0501"))
	// EisaId ("PNP0303") -> 0C 41 D0 03 03
	assert.Equal(t, []byte{0x0C, 0x41, 0xD0, 0x03, 0x03}, AMLEISAID("PNP0303"))

	for _, bad := range []string{"PNP050", "PNP05011", "pnp0501", "PNP05G1", "P1P0501"} {
		_, err := ParseEISAID(bad)
		assert.Error(t, err, bad)
	}
	assert.Panics(t, func() { AMLEISAID("bad") })
}

func TestAMLString(t *testing.T) {
	// "ACPI0007" -> 0D 41 43 50 49 30 30 30 37 00
	assert.Equal(t, []byte{0x0D, 0x41, 0x43, 0x50, 0x49, 0x30, 0x30, 0x30, 0x37, 0x00}, AMLString("ACPI0007"))
	assert.Equal(t, []byte{0x0D, 0x00}, AMLString(""))
	assert.Panics(t, func() { AMLString("a\x00b") })
	assert.Panics(t, func() { AMLString("é") })
}

func TestAMLNameAndPackage(t *testing.T) {
	// Name (_STA, 0x0F)
	assert.Equal(t, []byte{0x08, 0x5F, 0x53, 0x54, 0x41, 0x0A, 0x0F},
		AMLName("_STA", AMLInteger(0x0F)))

	// Name (_S5, Package (0x04) { 0x07, 0x07, Zero, Zero })
	assert.Equal(t, []byte{
		0x08, 0x5F, 0x53, 0x35, 0x5F, // nameOp _S5_
		0x12, 0x08, 0x04, // packageOp AMLPkgLength(8) NumElements(4)
		0x0A, 0x07, 0x0A, 0x07, 0x00, 0x00,
	}, AMLName("_S5", AMLPackage(AMLInteger(7), AMLInteger(7), AMLInteger(0), AMLInteger(0))))

	// Name (_S0, Package (0x04) { Zero, Zero, Zero, Zero })
	assert.Equal(t, []byte{0x08, 0x5F, 0x53, 0x30, 0x5F, 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00},
		AMLName("_S0", AMLPackage(AMLInteger(0), AMLInteger(0), AMLInteger(0), AMLInteger(0))))

	// Name (\_SB.COM2, 0x03F8)
	assert.Equal(t, []byte{0x08, 0x5C, 0x2E, 0x5F, 0x53, 0x42, 0x5F, 0x43, 0x4F, 0x4D, 0x32, 0x0B, 0xF8, 0x03},
		AMLName(`\_SB.COM2`, AMLInteger(0x3F8)))

	// Name (QWRD, 0x123456789A)
	assert.Equal(t, []byte{0x08, 0x51, 0x57, 0x52, 0x44, 0x0E, 0x9A, 0x78, 0x56, 0x34, 0x12, 0x00, 0x00, 0x00},
		AMLName("QWRD", AMLInteger(0x123456789A)))

	// Name (ALLF, 0xFFFFFFFFFFFFFFFF)
	assert.Equal(t, []byte{0x08, 0x41, 0x4C, 0x4C, 0x46, 0xFF}, AMLName("ALLF", AMLInteger(^uint64(0))))

	// Name (STR, "ACPI0007")
	assert.Equal(t, []byte{0x08, 0x53, 0x54, 0x52, 0x5F, 0x0D, 0x41, 0x43, 0x50, 0x49, 0x30, 0x30, 0x30, 0x37, 0x00},
		AMLName("STR", AMLString("ACPI0007")))

	// Name (BUF, Buffer () { 0x79, 0x00 })
	assert.Equal(t, []byte{0x08, 0x42, 0x55, 0x46, 0x5F, 0x11, 0x05, 0x0A, 0x02, 0x79, 0x00},
		AMLName("BUF", AMLBuffer([]byte{0x79, 0x00})))

	// Package () {} -> 12 02 00
	assert.Equal(t, []byte{0x12, 0x02, 0x00}, AMLPackage())
	assert.Panics(t, func() { AMLPackage(make([][]byte, 256)...) })
}

func TestAMLPackageLongBody(t *testing.T) {
	// A package whose body crosses 63 bytes switches to the 2-byte PkgLength:
	// Package (0x02) { Buffer (58) {...}, Zero }: the buffer is 11 3D 0A 3A and
	// 58 bytes (62), so the package body is 1 + 62 + 1 = 64 -> PkgLength 42 04.
	p := AMLPackage(AMLBuffer(bufferOf(58)), AMLInteger(0))
	assert.Equal(t, []byte{0x12, 0x42, 0x04, 0x02, 0x11, 0x3D, 0x0A, 0x3A}, p[:8])
	assert.Len(t, p, 3+64)
}

func TestAMLDeviceScopeMethod(t *testing.T) {
	// Scope (\_SB) {} -> 10 06 5C 5F 53 42 5F
	assert.Equal(t, []byte{0x10, 0x06, 0x5C, 0x5F, 0x53, 0x42, 0x5F}, AMLScope(`\_SB`))

	// Device (KBD) { Name (_HID, EisaId ("PNP0303")) }
	assert.Equal(t, []byte{
		0x5B, 0x82, 0x0F, 0x4B, 0x42, 0x44, 0x5F, // ExtOp deviceOp AMLPkgLength(15) KBD_
		0x08, 0x5F, 0x48, 0x49, 0x44, 0x0C, 0x41, 0xD0, 0x03, 0x03, // Name (_HID, EisaId ("PNP0303"))
	}, AMLDevice("KBD", AMLName("_HID", AMLEISAID("PNP0303"))))

	// Scope (\_SB) { Device (ABCD) { Name (_ADR, Zero) Name (EFGH, Zero) } }
	assert.Equal(t, []byte{
		0x10, 0x19, 0x5C, 0x5F, 0x53, 0x42, 0x5F,
		0x5B, 0x82, 0x11, 0x41, 0x42, 0x43, 0x44,
		0x08, 0x5F, 0x41, 0x44, 0x52, 0x00,
		0x08, 0x45, 0x46, 0x47, 0x48, 0x00,
	}, AMLScope(`\_SB`, AMLDevice("ABCD", AMLName("_ADR", AMLInteger(0)), AMLName("EFGH", AMLInteger(0)))))

	// Method (MTHA, 0, NotSerialized) { Return (0x0F) }
	assert.Equal(t, []byte{0x14, 0x09, 0x4D, 0x54, 0x48, 0x41, 0x00, 0xA4, 0x0A, 0x0F},
		AMLMethod("MTHA", 0, false, AMLReturn(AMLInteger(0x0F))))

	// Method (MTHS, 2, Serialized) { Return (One) }
	assert.Equal(t, []byte{0x14, 0x08, 0x4D, 0x54, 0x48, 0x53, 0x0A, 0xA4, 0x01},
		AMLMethod("MTHS", 2, true, AMLReturn(AMLInteger(1))))
	assert.Panics(t, func() { AMLMethod("MTHX", 8, false) })
}

func TestAMLResourceTemplate(t *testing.T) {
	// IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08)
	assert.Equal(t, []byte{0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08}, AMLIO16(0x3F8, 0x3F8, 1, 8))
	// IRQNoFlags () {4}
	assert.Equal(t, []byte{0x22, 0x10, 0x00}, AMLIRQNoFlags(4))
	// IRQNoFlags () {3,4,15}
	assert.Equal(t, []byte{0x22, 0x18, 0x80}, AMLIRQNoFlags(3, 4, 15))
	assert.Panics(t, func() { AMLIRQNoFlags(16) })

	// Name (RT, ResourceTemplate () { IRQNoFlags () {4} })
	assert.Equal(t, []byte{0x08, 0x52, 0x54, 0x5F, 0x5F, 0x11, 0x08, 0x0A, 0x05, 0x22, 0x10, 0x00, 0x79, 0x00},
		AMLName("RT", AMLResourceTemplate(AMLIRQNoFlags(4))))

	// ResourceTemplate () {
	//     IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08)
	//     IRQNoFlags () {4}
	// }
	assert.Equal(t, []byte{
		0x11, 0x10, 0x0A, 0x0D, // bufferOp AMLPkgLength(16) BufferSize(13)
		0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08,
		0x22, 0x10, 0x00,
		0x79, 0x00, // End Tag, checksum 0
	}, AMLResourceTemplate(AMLIO16(0x3F8, 0x3F8, 1, 8), AMLIRQNoFlags(4)))
}

// TestComposeIsConcatenation guards the encoder's composition rule: a term's
// bytes do not depend on where it is used.
func TestAMLComposeIsConcatenation(t *testing.T) {
	a, b := AMLName("AAAA", AMLInteger(1)), AMLName("BBBB", AMLInteger(2))
	s := AMLScope("_SB", a, b)
	assert.True(t, bytes.HasSuffix(s, append(append([]byte{}, a...), b...)))
}
