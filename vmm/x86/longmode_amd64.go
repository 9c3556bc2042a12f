package x86

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/pmvm/pmvm/vmm/kvm"
)

// Control register and EFER bits used at 64-bit entry.
const (
	cr0PE   = 1 << 0
	cr0ET   = 1 << 4
	cr0NE   = 1 << 5
	cr0PG   = 1 << 31
	cr4PAE  = 1 << 5
	eferLME = 1 << 8
	eferLMA = 1 << 10

	pteP  = 1 << 0
	pteRW = 1 << 1
	ptePS = 1 << 7
)

// gdtEntry encodes a segment descriptor from its flags (the high nibble of
// byte 6 plus the access byte, as in the Linux GDT_ENTRY macro), base and limit.
func gdtEntry(flags uint16, base, limit uint32) uint64 {
	return uint64(base&0xff000000)<<32 |
		uint64(flags&0xf0ff)<<40 |
		uint64(limit&0x000f0000)<<32 |
		uint64(base&0x00ffffff)<<16 |
		uint64(limit&0x0000ffff)
}

// BootGDT is the GDT entered with: index 2 is the 64-bit code segment
// (BootCS), 3 the flat data segment (BootDS), 4 a TSS (BootTSS) that KVM
// needs to enter the guest.
var BootGDT = []uint64{
	0,
	0,
	gdtEntry(0xa09b, 0, 0xfffff), // code: present, DPL 0, exec/read, accessed, L, G
	gdtEntry(0xc093, 0, 0xfffff), // data: present, DPL 0, read/write, accessed, D/B, G
	gdtEntry(0x808b, 0, 0xfffff), // TSS: present, busy 64-bit TSS, G
}

// segmentFromGDT turns a descriptor into the kvm_segment KVM expects.
func segmentFromGDT(entry uint64, selector uint16) kvm.Segment {
	return kvm.Segment{
		Base:     (entry>>16)&0xffffff | (entry>>32)&0xff000000,
		Limit:    expandLimit(uint32(entry&0xffff|(entry>>32)&0xf0000), entry>>55&1 == 1),
		Selector: selector,
		Type:     uint8(entry >> 40 & 0xf),
		S:        uint8(entry >> 44 & 1),
		DPL:      uint8(entry >> 45 & 3),
		Present:  uint8(entry >> 47 & 1),
		AVL:      uint8(entry >> 52 & 1),
		L:        uint8(entry >> 53 & 1),
		DB:       uint8(entry >> 54 & 1),
		G:        uint8(entry >> 55 & 1),
	}
}

func expandLimit(limit uint32, granular bool) uint32 {
	if granular {
		return limit<<12 | 0xfff
	}
	return limit
}

// WriteBootTables writes the boot GDT, an empty IDT and page tables that
// identity-map the first 4 GiB with 2 MiB pages.
func WriteBootTables(mem io.WriterAt) error {
	gdt := make([]byte, 8*len(BootGDT))
	for i, e := range BootGDT {
		binary.LittleEndian.PutUint64(gdt[8*i:], e)
	}
	if _, err := mem.WriteAt(gdt, GDTAddr); err != nil {
		return fmt.Errorf("write GDT: %w", err)
	}
	if _, err := mem.WriteAt(make([]byte, 8), IDTAddr); err != nil {
		return fmt.Errorf("write IDT: %w", err)
	}
	pml4 := make([]byte, 4096)
	binary.LittleEndian.PutUint64(pml4, PDPTAddr|pteP|pteRW)
	pdpt := make([]byte, 4096)
	pd := make([]byte, 4*4096)
	for i := 0; i < 4; i++ {
		binary.LittleEndian.PutUint64(pdpt[8*i:], uint64(PDAddr+i*4096)|pteP|pteRW)
	}
	for i := 0; i < 4*512; i++ {
		binary.LittleEndian.PutUint64(pd[8*i:], uint64(i)<<21|pteP|pteRW|ptePS)
	}
	for addr, b := range map[int64][]byte{PML4Addr: pml4, PDPTAddr: pdpt, PDAddr: pd} {
		if _, err := mem.WriteAt(b, addr); err != nil {
			return fmt.Errorf("write page tables: %w", err)
		}
	}
	return nil
}

// LongModeSregs returns sregs (as read from a fresh vCPU) changed for 64-bit
// entry: paging on with the boot page tables, the boot GDT loaded.
func LongModeSregs(s kvm.Sregs) kvm.Sregs {
	code := segmentFromGDT(BootGDT[BootCS/8], BootCS)
	data := segmentFromGDT(BootGDT[BootDS/8], BootDS)
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = segmentFromGDT(BootGDT[BootTSS/8], BootTSS)
	s.GDT = kvm.DTable{Base: GDTAddr, Limit: uint16(8*len(BootGDT) - 1)}
	s.IDT = kvm.DTable{Base: IDTAddr, Limit: 7}
	s.CR0 = cr0PE | cr0ET | cr0NE | cr0PG
	s.CR3 = PML4Addr
	s.CR4 = cr4PAE
	s.EFER = eferLME | eferLMA
	return s
}

// LinuxEntryRegs are the general registers at the 64-bit Linux entry point.
func LinuxEntryRegs(b *Boot) kvm.Regs {
	return kvm.Regs{RIP: b.Entry, RSI: b.ZeroPage, RSP: BootStackTop, RBP: BootStackTop, RFLAGS: 2}
}

// InitialFPU is the FPU state after FNINIT with SSE exceptions masked.
func InitialFPU() kvm.FPU { return kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80} }

// MSR indexes set at boot.
const (
	msrIA32SysenterCS  = 0x174
	msrIA32SysenterESP = 0x175
	msrIA32SysenterEIP = 0x176
	msrIA32MiscEnable  = 0x1a0
	msrMTRRDefType     = 0x2ff
	msrSTAR            = 0xc0000081
	msrLSTAR           = 0xc0000082
	msrCSTAR           = 0xc0000083
	msrSyscallMask     = 0xc0000084
	msrKernelGSBase    = 0xc0000102

	miscEnableFastString = 1 << 0
	mtrrEnable           = 1 << 11
	mtrrTypeWriteBack    = 6
)

// BootMSRs are the MSRs set on every vCPU before the first entry. The MTRR
// default type matters: without it the guest sees all RAM as uncacheable.
func BootMSRs() []kvm.MSREntry {
	return []kvm.MSREntry{
		{Index: msrIA32SysenterCS},
		{Index: msrIA32SysenterESP},
		{Index: msrIA32SysenterEIP},
		{Index: msrSTAR},
		{Index: msrCSTAR},
		{Index: msrKernelGSBase},
		{Index: msrSyscallMask},
		{Index: msrLSTAR},
		{Index: msrIA32MiscEnable, Data: miscEnableFastString},
		{Index: msrMTRRDefType, Data: mtrrEnable | mtrrTypeWriteBack},
	}
}

// Local APIC register offsets and delivery modes for the LINT pins.
const (
	apicLVTLINT0   = 0x350
	apicLVTLINT1   = 0x360
	apicModeMask   = 0x700
	apicModeExtINT = 0x700
	apicModeNMI    = 0x400
)

// WireLINTs routes LINT0 to the PIC (ExtINT) and LINT1 to NMI, the wiring
// of a PC's virtual wire mode.
func WireLINTs(l kvm.LAPICState) kvm.LAPICState {
	set := func(off int, mode uint32) {
		v := binary.LittleEndian.Uint32(l.Regs[off:])
		binary.LittleEndian.PutUint32(l.Regs[off:], v&^apicModeMask|mode)
	}
	set(apicLVTLINT0, apicModeExtINT)
	set(apicLVTLINT1, apicModeNMI)
	return l
}
