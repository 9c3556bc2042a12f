package acpi

import (
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
)

// Layout of the image, as offsets from its base. The RSDP comes first so that
// an image placed at 0xE0000 puts it on the 16-byte boundary where Linux scans
// (0xE0000-0xFFFFF); the FACS is 64-byte aligned as the spec requires. The
// tables that follow are 16-byte aligned. Only the MADT and the DSDT change
// size with the config, so they come last. With 254 vCPUs the image is about
// 2.8 KiB.
//
//	0x000  RSDP  36 bytes
//	0x040  FACS  64 bytes
//	0x080  XSDT  52 bytes (FADT, MADT)
//	0x0C0  FACP  276 bytes
//	0x1E0  APIC  44 + 8*CPUs + 28 bytes
//	 ...   DSDT  after the MADT, 16-byte aligned
const (
	RSDPOffset   = 0x000
	FACSOffset   = 0x040
	XSDTOffset   = 0x080
	FADTOffset   = 0x0C0
	MADTOffset   = 0x1E0
	tableAlign   = 16
	MaxImageSize = 0x20000 // the VMM reserves 0xE0000-0xFFFFF
	// MinBaseAlignment is the alignment Build requires of base: the FACS must
	// be 64-byte aligned in guest-physical memory.
	MinBaseAlignment = FACSAlignment
)

// Image is every table laid out in one block for guest-physical address Base.
type Image struct {
	Base  uint64
	Bytes []byte
	RSDP  uint64 // guest-physical address of the RSDP (= Base)
	FACS  uint64 // guest-physical address of the FACS (64-byte aligned)
	// Tables holds each table's bytes (slices of Bytes) by signature:
	// "RSDP", "XSDT", "FACP", "FACS", "DSDT", "APIC".
	Tables map[string][]byte
	// Addrs holds each table's guest-physical address by signature.
	Addrs map[string]uint64
}

// FirmwareWakingVectorAddr is the guest-physical address of the FACS 32-bit
// FirmwareWakingVector: after an S3 suspend the VMM reads the guest's resume
// address there (and XFirmwareWakingVector, 8 bytes at FACS+24, which Linux
// leaves 0).
func (im *Image) FirmwareWakingVectorAddr() uint64 {
	return im.FACS + FACSFirmwareWakingVectorOffset
}

// Signatures lists the table signatures of an Image in a stable order.
func (im *Image) Signatures() []string {
	sigs := make([]string, 0, len(im.Tables))
	for s := range im.Tables {
		sigs = append(sigs, s)
	}
	sort.Strings(sigs)
	return sigs
}

// DumpTables writes every table to dir as <signature>.dat (the names and raw
// format `iasl -d` and `acpixtract` use), creating dir if needed.
func (im *Image) DumpTables(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("acpi: dump tables: %w", err)
	}
	for _, sig := range im.Signatures() {
		p := filepath.Join(dir, sig+".dat")
		if err := os.WriteFile(p, im.Tables[sig], 0o644); err != nil {
			return fmt.Errorf("acpi: dump table %s: %w", sig, err)
		}
	}
	return nil
}

func alignUp(n, a int) int { return (n + a - 1) / a * a }

// Build validates c and lays every table out in one contiguous image meant to
// be copied to guest-physical address base. base must be 64-byte aligned and
// the image must end below 4 GiB (the RSDP's and FADT's 32-bit fields point
// into it). The VMM puts it at 0xE0000 and marks that range reserved.
func Build(c Config, base uint64) (*Image, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if base%MinBaseAlignment != 0 {
		return nil, fmt.Errorf("acpi: image base 0x%X is not %d-byte aligned (the FACS must be 64-byte aligned); use e.g. 0xE0000",
			base, MinBaseAlignment)
	}

	dsdt := buildDSDT(c)
	madt := buildMADT(c)
	dsdtOffset := alignUp(MADTOffset+len(madt), tableAlign)
	size := dsdtOffset + len(dsdt)
	if size > MaxImageSize {
		return nil, fmt.Errorf("acpi: tables take %d bytes, more than the %d reserved for them", size, MaxImageSize)
	}
	if base+uint64(size) > 1<<32 {
		return nil, fmt.Errorf("acpi: image at 0x%X..0x%X does not end below 4 GiB; the FADT's 32-bit pointers need it there",
			base, base+uint64(size))
	}
	addr := func(off int) uint64 { return base + uint64(off) }

	hwsig := crc32.ChecksumIEEE(append(append([]byte{}, madt...), dsdt...))
	facs := buildFACS(hwsig)
	fadt := buildFADT(c, addr(FACSOffset), addr(dsdtOffset))
	xsdt := buildXSDT([]uint64{addr(FADTOffset), addr(MADTOffset)})
	rsdp := buildRSDP(addr(XSDTOffset))

	im := &Image{
		Base:   base,
		Bytes:  make([]byte, size),
		RSDP:   addr(RSDPOffset),
		FACS:   addr(FACSOffset),
		Tables: map[string][]byte{},
		Addrs:  map[string]uint64{},
	}
	place := func(sig string, off int, t []byte) {
		copy(im.Bytes[off:], t)
		im.Tables[sig] = im.Bytes[off : off+len(t) : off+len(t)]
		im.Addrs[sig] = addr(off)
	}
	place("RSDP", RSDPOffset, rsdp)
	place("FACS", FACSOffset, facs)
	place("XSDT", XSDTOffset, xsdt)
	place("FACP", FADTOffset, fadt)
	place("APIC", MADTOffset, madt)
	place("DSDT", dsdtOffset, dsdt)
	return im, nil
}
