// Package acpi builds the ACPI tables pmvm gives its guests: a legacy (not
// hardware-reduced) x86 PC with a PM1a event and control block, an optional
// ACPI PM timer, two 16550 UARTs, a CMOS RTC and an i8042 keyboard controller,
// one I/O APIC and one local APIC per vCPU. No PCI bus, no GPE blocks, no SMM:
// ACPI mode is always on (SMI_CMD = 0).
//
// Build lays out, in one image for guest-physical memory (see build.go):
//
//	RSDP (rev 2) -> XSDT -> FACP (FADT rev 6.5) -> FACS, DSDT
//	                     -> APIC (MADT rev 5)
//
// The small AML encoder (AMLName, AMLPackage, AMLDevice, ...) is in aml.go.
// The package imports only the standard library.
//
// # What the VMM must do to match these tables
//
//   - Copy Image.Bytes to Image.Base (0xE0000: Linux scans 0xE0000-0xFFFFF
//     for the RSDP on 16-byte boundaries; setting boot_params.acpi_rsdp_addr
//     to Image.RSDP as well spares the scan) and keep that range out of the
//     e820 RAM (type 2 reserved). Copy it at cold boot only: on resume from S3
//     the FACS in guest RAM holds the guest's waking vector, which a second
//     copy would erase.
//   - PM1 status (PM1aEventPort, 16 bits): write-1-to-clear; the VMM sets
//     WAK_STS (bit 15) when it wakes the guest, PWRBTN_STS (bit 8) for a power
//     button press when Config.PowerButton.
//   - PM1 enable (PM1aEventPort+2, 16 bits): must read back what was written.
//     ACPICA checks each bit it sets or clears (GBL_EN bit 5, PWRBTN_EN bit 8,
//     RTC_EN bit 10 even though FIX_RTC says there is no RTC_STS) and logs
//     "ACPI Error: Could not enable/disable ... event" when one does not stick.
//   - PM1 control (PM1aControlPort, 16 bits): SCI_EN (bit 0) always reads 1,
//     writes to it are ignored (Linux writes 1 after resume); SLP_TYP is bits
//     10-12, SLP_EN (bit 13, reads 0) triggers the transition: SLP_TYP =
//     SleepTypeS5 powers off, SleepTypeS3 suspends (only when EnableS3); any
//     other value, or a write without SLP_EN (the \_S0 value 0 after resume),
//     does nothing. Stop the vCPU on the SLP_EN write: ACPICA otherwise spins
//     on WAK_STS (S3) or stalls 10 s and retries (S5).
//   - PM timer (PMTimerPort, 32 bits, when non-zero): a free-running
//     3.579545 MHz counter, all 32 bits significant (TMR_VAL_EXT is set).
//   - SCI: ISA IRQ SCIIRQ = GSI = I/O APIC pin, level-triggered, active-high
//     (the MADT override says so): assert while PM1 status & enable has
//     TMR, GBL, PWRBTN, SLPBTN or RTC bits set, de-assert when cleared.
//   - S3 wake: read the 32-bit FirmwareWakingVector at
//     Image.FirmwareWakingVectorAddr() (FACS + 12; XFirmwareWakingVector at
//     FACS + 24 is left 0 by Linux) and start the BSP in real mode at
//     CS = vector >> 4, IP = vector & 0xF.
//   - Legacy devices exactly at the DSDT's resources: COM1 0x3F8 IRQ 4, COM2
//     0x2F8 IRQ 3, RTC 0x70-0x71 IRQ 8 with the BCD century at CMOS index 0x32,
//     i8042 0x60/0x64 IRQ 1. RESET_REG (when ResetPort != 0) is a byte write of
//     ResetValue to ResetPort (0xCF9 with 0x06 in DefaultConfig).
//   - KVM's default GSI routing (ISA IRQ n = I/O APIC pin n): the MADT has no
//     IRQ 0 -> GSI 2 override, unlike QEMU.
package acpi
