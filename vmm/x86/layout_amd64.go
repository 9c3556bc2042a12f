// Package x86 knows the x86-64 PC that pmvm builds: where everything sits in
// guest-physical memory and in I/O port space, the 64-bit Linux boot
// protocol, the initial page tables and GDT, CPUID and MSRs.
package x86

// Guest-physical addresses. Everything below 1 MiB follows the PC
// convention so that an unmodified Linux finds what it looks for.
const (
	// GDTAddr holds the boot GDT (null, null, code, data, TSS).
	GDTAddr = 0x500
	// IDTAddr holds an empty IDT: interrupts stay off until Linux loads its own.
	IDTAddr = 0x520
	// ZeroPageAddr holds struct boot_params ("the zero page"); RSI points here at entry.
	ZeroPageAddr = 0x7000
	// BootStackTop is the initial RSP (between the zero page and the page tables).
	BootStackTop = 0x8ff0
	// PML4Addr, PDPTAddr and PDAddr hold the boot page tables: an identity
	// map of the first 4 GiB with 2 MiB pages (four page directories).
	PML4Addr = 0x9000
	PDPTAddr = 0xa000
	PDAddr   = 0xb000 // four pages: 0xb000-0xefff
	// CmdlineAddr holds the kernel command line, NUL terminated.
	CmdlineAddr = 0x20000
	// CmdlineMax bounds the command line we accept (the kernel's own
	// cmdline_size in the setup header may be smaller and wins).
	CmdlineMax = 0x10000

	// EBDAStart..LowRAMEnd: the top of conventional memory is reserved,
	// as the extended BIOS data area is on a PC.
	EBDAStart = 0x9fc00
	// LegacyHoleStart..LegacyHoleEnd is the VGA and option ROM window: backed
	// by RAM in our memory slot but reserved in the e820 map.
	LegacyHoleStart = 0xa0000
	LegacyHoleEnd   = 0xe0000
	// ACPITablesAddr is where the ACPI tables are copied (RSDP first): the
	// BIOS area Linux scans for "RSD PTR ". Reserved in e820 up to 1 MiB.
	ACPITablesAddr = 0xe0000
	ACPITablesMax  = 0x20000
	// HighMemStart is where the protected-mode kernel is loaded (1 MiB).
	HighMemStart = 0x100000

	// MMIOGapStart..MMIOGapEnd is never RAM: the LAPIC, IOAPIC and KVM's
	// private pages live there. Guest RAM past MMIOGapStart continues at 4 GiB.
	MMIOGapStart = 0xc0000000
	MMIOGapEnd   = 0x100000000

	// IOAPICAddr and LAPICAddr are the standard interrupt controller windows.
	IOAPICAddr = 0xfec00000
	LAPICAddr  = 0xfee00000
	// IdentityMapAddr (one page) and TSSAddr (three pages) are KVM's private
	// pages for real-mode emulation on Intel VMX (KVM_SET_IDENTITY_MAP_ADDR,
	// KVM_SET_TSS_ADDR); they must not overlap RAM.
	IdentityMapAddr = 0xfffbc000
	TSSAddr         = 0xfffbd000
)

// I/O ports of the platform's devices.
const (
	COM1Port      = 0x3f8 // console
	COM2Port      = 0x2f8 // qemu-guest-agent line
	UARTPortCount = 8
	COM1IRQ       = 4
	COM2IRQ       = 3

	I8042Port      = 0x60 // 0x60 data ... 0x64 status/command
	I8042PortCount = 5

	CMOSPort      = 0x70 // 0x70 index, 0x71 data
	CMOSPortCount = 2
	RTCIRQ        = 8

	// PMBlockPort is the ACPI PM1a event block (4 bytes), followed by the
	// PM1a control block (2 bytes at +4) and the PM timer (4 bytes at +8),
	// the layout of QEMU's ICH9.
	PMBlockPort      = 0x600
	PM1aEventPort    = PMBlockPort
	PM1aControlPort  = PMBlockPort + 4
	PMTimerPort      = PMBlockPort + 8
	PMBlockPortCount = 12
	SCIIRQ           = 9

	// ResetPort is the PCI reset control register (0xcf9); writing 0x06
	// resets the machine. The FADT advertises it as RESET_REG.
	ResetPort  = 0xcf9
	ResetValue = 0x06
)

// Boot GDT selectors required by the Linux boot protocol for 64-bit entry.
const (
	BootCS  = 0x10
	BootDS  = 0x18
	BootTSS = 0x20
)
