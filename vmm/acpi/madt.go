package acpi

import "encoding/binary"

// MADT, signature "APIC" (ACPI 6.5, section 5.2.12), revision 5: header,
// local APIC address, flags, then interrupt controller structures.
const (
	MADTRevision             = 5
	MADTLocalAPICAddrOffset  = 36 // 4
	MADTFlagsOffset          = 40 // 4
	MADTEntriesOffset        = 44
	MADTFlagPCATCompat       = 1 << 0 // dual 8259 PICs present (KVM's irqchip has them)
	MADTTypeLocalAPIC        = 0
	MADTTypeIOAPIC           = 1
	MADTTypeIntSrcOverride   = 2
	MADTTypeLocalAPICNMI     = 4
	MADTLocalAPICSize        = 8
	MADTIOAPICSize           = 12
	MADTIntSrcOverrideSize   = 10
	MADTLocalAPICNMISize     = 6
	MADTLocalAPICEnabled     = 1 << 0
	MADTAllProcessors        = 0xFF // ACPI processor UID meaning "every processor"
	MPSINTIActiveHighLevel   = 0x000D
	MPSINTIConformsToBusSpec = 0x0000
)

func madtSize(cpus int) int {
	return MADTEntriesOffset + cpus*MADTLocalAPICSize + MADTIOAPICSize +
		MADTIntSrcOverrideSize + MADTLocalAPICNMISize
}

// buildMADT returns the MADT: one enabled Processor Local APIC per vCPU
// (processor UID i, APIC id i), the I/O APIC with GSI base 0, an Interrupt
// Source Override making the SCI level-triggered, active-high (without it
// Linux programs the SCI pin level / active-low; with it the guest programs the
// pin exactly as the VMM drives it: asserted high while PM1 status & enable is
// non-zero, the way QEMU does), and LINT1 as NMI on every processor.
//
// There is deliberately no override for IRQ 0: with KVM's default GSI routing
// ISA IRQ n is I/O APIC pin n, including the PIT on pin 0.
func buildMADT(c Config) []byte {
	t := newTable("APIC", MADTRevision, "APIC", madtSize(c.CPUs))
	le := binary.LittleEndian
	le.PutUint32(t[MADTLocalAPICAddrOffset:], c.LocalAPICAddr)
	le.PutUint32(t[MADTFlagsOffset:], MADTFlagPCATCompat)

	e := t[MADTEntriesOffset:]
	for i := 0; i < c.CPUs; i++ {
		e[0] = MADTTypeLocalAPIC
		e[1] = MADTLocalAPICSize
		e[2] = byte(i) // ACPI processor UID
		e[3] = byte(i) // APIC id
		le.PutUint32(e[4:], MADTLocalAPICEnabled)
		e = e[MADTLocalAPICSize:]
	}

	e[0] = MADTTypeIOAPIC
	e[1] = MADTIOAPICSize
	e[2] = c.IOAPICID
	e[3] = 0 // reserved
	le.PutUint32(e[4:], c.IOAPICAddr)
	le.PutUint32(e[8:], 0) // global system interrupt base
	e = e[MADTIOAPICSize:]

	e[0] = MADTTypeIntSrcOverride
	e[1] = MADTIntSrcOverrideSize
	e[2] = 0                              // bus: ISA
	e[3] = byte(c.SCIIRQ)                 // source: ISA IRQ
	le.PutUint32(e[4:], uint32(c.SCIIRQ)) // global system interrupt
	le.PutUint16(e[8:], MPSINTIActiveHighLevel)
	e = e[MADTIntSrcOverrideSize:]

	e[0] = MADTTypeLocalAPICNMI
	e[1] = MADTLocalAPICNMISize
	e[2] = MADTAllProcessors
	le.PutUint16(e[3:], MPSINTIConformsToBusSpec)
	e[5] = 1 // LINT1

	finishTable(t)
	return t
}
