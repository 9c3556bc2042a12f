package kvm

// Structs shared with the kernel. Field order and types follow
// include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h; the sizes
// below are the kernel's, and layout_test.go asserts the Go structs match
// them field by field.

const (
	sizeofUserspaceMemoryRegion = 32
	sizeofRegs                  = 144
	sizeofSegment               = 24
	sizeofDTable                = 16
	sizeofSregs                 = 312
	sizeofFPU                   = 416
	sizeofCPUIDEntry            = 40
	sizeofCPUIDHeader           = 8
	sizeofXCRs                  = 392
	sizeofMSREntry              = 16
	sizeofMSRsHeader            = 8
	sizeofIRQLevel              = 8
	sizeofPITConfig             = 64
	sizeofLAPICState            = 1024
	sizeofClockData             = 48
)

// UserspaceMemoryRegion is struct kvm_userspace_memory_region.
type UserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// Regs is struct kvm_regs: the general purpose registers.
type Regs struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFLAGS        uint64
}

// Segment is struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable is struct kvm_dtable (GDTR/IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs is struct kvm_sregs: segment, control and descriptor-table registers.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               DTable
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	APICBase               uint64
	InterruptBitmap        [4]uint64
}

// FPU is struct kvm_fpu.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

// CPUIDEntry is struct kvm_cpuid_entry2.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// xcrs is struct kvm_xcrs.
type xcrs struct {
	NrXCRs uint32
	Flags  uint32
	XCRs   [16]struct {
		XCR      uint32
		Reserved uint32
		Value    uint64
	}
	_ [16]uint64
}

// CPUIDFlagSignificantIndex marks a leaf whose sub-leaf (Index) matters.
const CPUIDFlagSignificantIndex = 1

// MSREntry is struct kvm_msr_entry.
type MSREntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

// irqLevel is struct kvm_irq_level.
type irqLevel struct {
	IRQ   uint32
	Level uint32
}

// pitConfig is struct kvm_pit_config.
type pitConfig struct {
	Flags uint32
	_     [15]uint32
}

// LAPICState is struct kvm_lapic_state: the 1 KiB local APIC register page.
type LAPICState struct {
	Regs [1024]byte
}

// ClockData is struct kvm_clock_data.
type ClockData struct {
	Clock    uint64
	Flags    uint32
	_        uint32
	Realtime uint64
	HostTSC  uint64
	_        [4]uint32
}
