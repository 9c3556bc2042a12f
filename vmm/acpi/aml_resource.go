package acpi

import "fmt"

// Resource descriptors (ACPI 6.5, section 6.4 "Resource Data Types for ACPI").
// Only the small descriptors pmvm's legacy devices need are here.

// AMLResourceTemplate encodes ASL ResourceTemplate() {descs...}: a buffer holding the
// descriptors followed by an End Tag (79 00). iasl writes a zero checksum in the
// End Tag, which the spec defines as "treat the checksum as correct"; so do we.
//
//	ResourceTemplate () { IRQNoFlags () {4} } -> 11 08 0A 05 22 10 00 79 00
func AMLResourceTemplate(descs ...[]byte) []byte {
	data := concat(descs...)
	data = append(data, 0x79, 0x00) // End Tag, small item 0xF, length 1; checksum 0
	return AMLBuffer(data)
}

// AMLIO16 encodes ASL IO(Decode16, min, max, align, length): a small I/O Port
// descriptor (type 0x08, 7 bytes of data) that decodes 16 address bits.
//
//	IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08) -> 47 01 F8 03 F8 03 01 08
func AMLIO16(min, max uint16, align, length uint8) []byte {
	return []byte{
		0x47, // small item 0x08 << 3 | length 7
		0x01, // Information: bit 0 = 1: decodes 16 bits (Decode16)
		byte(min), byte(min >> 8),
		byte(max), byte(max >> 8),
		align,
		length,
	}
}

// AMLIRQNoFlags encodes ASL IRQNoFlags() {irqs...}: a 2-byte-data IRQ descriptor
// (type 0x04) whose mask has bit n set for IRQ n; no flags byte, meaning
// edge-triggered, active-high, exclusive (ISA). It panics on an IRQ above 15.
//
//	IRQNoFlags () {4} -> 22 10 00
func AMLIRQNoFlags(irqs ...uint8) []byte {
	var mask uint16
	for _, irq := range irqs {
		if irq > 15 {
			panic(fmt.Sprintf("acpi: AML: IRQNoFlags: IRQ %d is not an ISA IRQ (0-15)", irq))
		}
		mask |= 1 << irq
	}
	return []byte{0x22, byte(mask), byte(mask >> 8)} // small item 0x04 << 3 | length 2
}
