package acpi

import (
	"encoding/binary"
	"fmt"
)

// Identification written into every table header and the RSDP.
const (
	OEMID           = "PMVM  " // 6 bytes
	OEMRevision     = 1
	CreatorID       = "PMVM" // 4 bytes, where iasl would write "INTL"
	CreatorRevision = 1
)

// System description table header (ACPI 6.5, section 5.2.6), 36 bytes.
const (
	HeaderSignatureOffset       = 0  // 4 bytes
	HeaderLengthOffset          = 4  // 4 bytes, whole table
	HeaderRevisionOffset        = 8  // 1 byte
	HeaderChecksumOffset        = 9  // 1 byte: all bytes of the table sum to 0
	HeaderOEMIDOffset           = 10 // 6 bytes
	HeaderOEMTableIDOffset      = 16 // 8 bytes
	HeaderOEMRevisionOffset     = 24 // 4 bytes
	HeaderCreatorIDOffset       = 28 // 4 bytes
	HeaderCreatorRevisionOffset = 32 // 4 bytes
	HeaderSize                  = 36
)

// newTable returns a table of size bytes (size >= HeaderSize) whose header is
// filled in except the checksum: call finishTable once the body is written.
// oemTableID is the 4-character suffix of "PMVM" (e.g. "FACP" -> "PMVMFACP").
func newTable(sig string, revision uint8, oemTableID string, size int) []byte {
	if len(sig) != 4 || len(oemTableID) != 4 || size < HeaderSize {
		panic(fmt.Sprintf("acpi: bad table header %q/%q size %d", sig, oemTableID, size))
	}
	t := make([]byte, size)
	copy(t[HeaderSignatureOffset:], sig)
	binary.LittleEndian.PutUint32(t[HeaderLengthOffset:], uint32(size))
	t[HeaderRevisionOffset] = revision
	copy(t[HeaderOEMIDOffset:], OEMID)
	copy(t[HeaderOEMTableIDOffset:], "PMVM"+oemTableID)
	binary.LittleEndian.PutUint32(t[HeaderOEMRevisionOffset:], OEMRevision)
	copy(t[HeaderCreatorIDOffset:], CreatorID)
	binary.LittleEndian.PutUint32(t[HeaderCreatorRevisionOffset:], CreatorRevision)
	return t
}

// finishTable sets the length field from len(t) and fixes the checksum.
func finishTable(t []byte) {
	binary.LittleEndian.PutUint32(t[HeaderLengthOffset:], uint32(len(t)))
	t[HeaderChecksumOffset] = 0
	t[HeaderChecksumOffset] = Checksum(t)
}

// Checksum returns the byte that makes the sum of b plus that byte 0 mod 256.
// Written into a zeroed checksum field of b, it makes b sum to 0.
func Checksum(b []byte) byte {
	var sum byte
	for _, x := range b {
		sum += x
	}
	return -sum
}

// Sum returns the 8-bit sum of b; a valid table sums to 0.
func Sum(b []byte) byte {
	var sum byte
	for _, x := range b {
		sum += x
	}
	return sum
}

// Generic Address Structure (ACPI 6.5, section 5.2.3.2), 12 bytes.
type GAS struct {
	SpaceID    uint8  // 0 system memory, 1 system I/O
	BitWidth   uint8  // register width in bits
	BitOffset  uint8  // offset of the register in the address, in bits
	AccessSize uint8  // 0 undefined (legacy), 1 byte, 2 word, 3 dword, 4 qword
	Address    uint64 // base address in SpaceID
}

// GAS address spaces and access sizes used here.
const (
	SpaceSystemMemory = 0
	SpaceSystemIO     = 1
	AccessByte        = 1
	AccessWord        = 2
	AccessDWord       = 3
	GASSize           = 12
)

func (g GAS) put(b []byte) {
	b[0] = g.SpaceID
	b[1] = g.BitWidth
	b[2] = g.BitOffset
	b[3] = g.AccessSize
	binary.LittleEndian.PutUint64(b[4:], g.Address)
}

// ioGAS describes an I/O port register block of length bytes accessed with
// accessSize; a zero port gives the all-zero "not present" GAS.
func ioGAS(port uint16, length uint8, accessSize uint8) GAS {
	if port == 0 {
		return GAS{}
	}
	return GAS{SpaceID: SpaceSystemIO, BitWidth: length * 8, AccessSize: accessSize, Address: uint64(port)}
}

// RSDP (ACPI 6.5, section 5.2.5.3), 36 bytes, revision 2. It has no standard
// header: the first checksum covers bytes 0-19 (the ACPI 1.0 part), the
// extended checksum the whole 36 bytes.
const (
	RSDPSignature              = "RSD PTR "
	RSDPChecksumOffset         = 8
	RSDPOEMIDOffset            = 9
	RSDPRevisionOffset         = 15
	RSDPRsdtAddressOffset      = 16
	RSDPLengthOffset           = 20
	RSDPXsdtAddressOffset      = 24
	RSDPExtendedChecksumOffset = 32
	RSDPSize                   = 36
	RSDPv1Size                 = 20 // bytes covered by the first checksum
	RSDPRevision               = 2
)

// buildRSDP returns a revision 2 RSDP with no RSDT (RsdtAddress 0) and the
// given XSDT address. ACPICA (Linux) uses the XSDT whenever revision >= 2 and
// XsdtAddress != 0.
func buildRSDP(xsdt uint64) []byte {
	r := make([]byte, RSDPSize)
	copy(r, RSDPSignature)
	copy(r[RSDPOEMIDOffset:], OEMID)
	r[RSDPRevisionOffset] = RSDPRevision
	binary.LittleEndian.PutUint32(r[RSDPLengthOffset:], RSDPSize)
	binary.LittleEndian.PutUint64(r[RSDPXsdtAddressOffset:], xsdt)
	r[RSDPChecksumOffset] = Checksum(r[:RSDPv1Size])
	r[RSDPExtendedChecksumOffset] = Checksum(r)
	return r
}

// XSDT (ACPI 6.5, section 5.2.8): header then 64-bit table addresses.
const XSDTRevision = 1

func buildXSDT(entries []uint64) []byte {
	t := newTable("XSDT", XSDTRevision, "XSDT", HeaderSize+8*len(entries))
	for i, e := range entries {
		binary.LittleEndian.PutUint64(t[HeaderSize+8*i:], e)
	}
	finishTable(t)
	return t
}

// FACS (ACPI 6.5, section 5.2.10), 64 bytes, 64-byte aligned, no checksum.
// The OS writes its resume address into it before S3: on wake the VMM reads
// FirmwareWakingVector (or XFirmwareWakingVector when non-zero) from guest
// memory at Image.FACS + offset.
const (
	FACSSignatureOffset             = 0  // "FACS"
	FACSLengthOffset                = 4  // 4 bytes, 64
	FACSHardwareSignatureOffset     = 8  // 4 bytes
	FACSFirmwareWakingVectorOffset  = 12 // 4 bytes: real-mode resume address, enter at CS = v>>4, IP = v&0xF
	FACSGlobalLockOffset            = 16 // 4 bytes
	FACSFlagsOffset                 = 20 // 4 bytes: bit 0 S4BIOS_F, bit 1 64BIT_WAKE_SUPPORTED_F (both 0 here)
	FACSXFirmwareWakingVectorOffset = 24 // 8 bytes: 0 = use FirmwareWakingVector (Linux leaves it 0)
	FACSVersionOffset               = 32 // 1 byte
	FACSOSPMFlagsOffset             = 36 // 4 bytes: bit 0 64BIT_WAKE_F, written by the OS
	FACSSize                        = 64
	FACSAlignment                   = 64
	FACSVersion                     = 2
	FACSFirmwareWakingVectorSize    = 4
	FACSXFirmwareWakingVectorSize   = 8
	FACSGlobalLockPendingBit        = 1 << 0
	FACSGlobalLockOwnedBit          = 1 << 1
	FACSOSPM64BitWakeFlag           = 1 << 0
	FACSFlagS4BIOS                  = 1 << 0
	FACSFlag64BitWakeSupported      = 1 << 1
)

// buildFACS returns an FACS with the given hardware signature (Build uses the
// CRC-32 of the MADT and DSDT, so it changes only when the described hardware
// does), a zero waking vector, global lock free, no flags.
func buildFACS(hardwareSignature uint32) []byte {
	f := make([]byte, FACSSize)
	copy(f, "FACS")
	binary.LittleEndian.PutUint32(f[FACSLengthOffset:], FACSSize)
	binary.LittleEndian.PutUint32(f[FACSHardwareSignatureOffset:], hardwareSignature)
	f[FACSVersionOffset] = FACSVersion
	return f
}
