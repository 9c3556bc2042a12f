package x86

import (
	"fmt"
	"io"
)

// ClearFirstMiB zeroes guest RAM below HighMemStart before a cold boot
// writes its structures there. A PC's firmware owns this first MiB, and
// Linux trusts what it finds in it: the BIOS data area (the EBDA segment
// at 0x40e and the base memory size at 0x413, read by the decompressor to
// place its trampoline and by setup_arch to reserve the BIOS regions), and
// the anchors it scans the EBDA and 0xe0000-0xfffff for (MP floating
// pointer, SMBIOS/DMI entry points, the PCI IRQ routing table, the RSDP).
// Persistent memory keeps what its last user left: a QEMU guest's SeaBIOS
// leaves valid anchors pointing at tables that are gone. pmvm is the
// firmware here, so nothing in this MiB may be left over: the zero page,
// command line, page tables, GDT, IDT and ACPI tables are written over
// zeros, and every byte of it is pmvm's. Above it, only what pmvm loads
// (the kernel and the initrd, written whole) is read before the guest
// writes it.
func ClearFirstMiB(mem io.WriterAt) error {
	if _, err := mem.WriteAt(make([]byte, HighMemStart), 0); err != nil {
		return fmt.Errorf("clear guest RAM below 1 MiB before a cold boot: %w", err)
	}
	return nil
}
