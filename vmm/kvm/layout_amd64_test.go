package kvm

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStructLayouts proves every struct passed to the kernel has the size
// and field offsets of its C definition in <linux/kvm.h>.
func TestStructLayouts(t *testing.T) {
	assert.EqualValues(t, sizeofUserspaceMemoryRegion, unsafe.Sizeof(UserspaceMemoryRegion{}))
	assert.EqualValues(t, 8, unsafe.Offsetof(UserspaceMemoryRegion{}.GuestPhysAddr))
	assert.EqualValues(t, 24, unsafe.Offsetof(UserspaceMemoryRegion{}.UserspaceAddr))

	assert.EqualValues(t, sizeofRegs, unsafe.Sizeof(Regs{}))
	assert.EqualValues(t, 128, unsafe.Offsetof(Regs{}.RIP))
	assert.EqualValues(t, 136, unsafe.Offsetof(Regs{}.RFLAGS))

	assert.EqualValues(t, sizeofSegment, unsafe.Sizeof(Segment{}))
	assert.EqualValues(t, 12, unsafe.Offsetof(Segment{}.Selector))
	assert.EqualValues(t, 14, unsafe.Offsetof(Segment{}.Type))
	assert.EqualValues(t, 22, unsafe.Offsetof(Segment{}.Unusable))
	assert.EqualValues(t, sizeofDTable, unsafe.Sizeof(DTable{}))

	assert.EqualValues(t, sizeofSregs, unsafe.Sizeof(Sregs{}))
	assert.EqualValues(t, 192, unsafe.Offsetof(Sregs{}.GDT))
	assert.EqualValues(t, 224, unsafe.Offsetof(Sregs{}.CR0))
	assert.EqualValues(t, 264, unsafe.Offsetof(Sregs{}.EFER))
	assert.EqualValues(t, 272, unsafe.Offsetof(Sregs{}.APICBase))
	assert.EqualValues(t, 280, unsafe.Offsetof(Sregs{}.InterruptBitmap))

	assert.EqualValues(t, sizeofFPU, unsafe.Sizeof(FPU{}))
	assert.EqualValues(t, 128, unsafe.Offsetof(FPU{}.FCW))
	assert.EqualValues(t, 136, unsafe.Offsetof(FPU{}.LastIP))
	assert.EqualValues(t, 152, unsafe.Offsetof(FPU{}.XMM))
	assert.EqualValues(t, 408, unsafe.Offsetof(FPU{}.MXCSR))

	assert.EqualValues(t, sizeofCPUIDEntry, unsafe.Sizeof(CPUIDEntry{}))
	assert.EqualValues(t, sizeofXCRs, unsafe.Sizeof(xcrs{}))
	assert.EqualValues(t, 12, unsafe.Offsetof(CPUIDEntry{}.EAX))
	assert.EqualValues(t, sizeofMSREntry, unsafe.Sizeof(MSREntry{}))
	assert.EqualValues(t, 8, unsafe.Offsetof(MSREntry{}.Data))
	assert.EqualValues(t, sizeofIRQLevel, unsafe.Sizeof(irqLevel{}))
	assert.EqualValues(t, sizeofPITConfig, unsafe.Sizeof(pitConfig{}))
	assert.EqualValues(t, sizeofLAPICState, unsafe.Sizeof(LAPICState{}))
	assert.EqualValues(t, sizeofClockData, unsafe.Sizeof(ClockData{}))
	assert.EqualValues(t, 16, unsafe.Offsetof(ClockData{}.Realtime))
	assert.EqualValues(t, 24, unsafe.Offsetof(ClockData{}.HostTSC))
}

// TestIoctlNumbers proves the computed ioctl numbers equal the values the
// kernel headers produce (taken from a C build of <linux/kvm.h>).
func TestIoctlNumbers(t *testing.T) {
	for name, c := range map[string]struct{ got, want uintptr }{
		"KVM_GET_API_VERSION":        {ioctlGetAPIVersion, 0xAE00},
		"KVM_CREATE_VM":              {ioctlCreateVM, 0xAE01},
		"KVM_GET_SUPPORTED_CPUID":    {ioctlGetSupportedCPUID, 0xC008AE05},
		"KVM_CREATE_VCPU":            {ioctlCreateVCPU, 0xAE41},
		"KVM_SET_USER_MEMORY_REGION": {ioctlSetUserMemoryRegion, 0x4020AE46},
		"KVM_SET_TSS_ADDR":           {ioctlSetTSSAddr, 0xAE47},
		"KVM_SET_IDENTITY_MAP_ADDR":  {ioctlSetIdentityMapAddr, 0x4008AE48},
		"KVM_CREATE_IRQCHIP":         {ioctlCreateIRQChip, 0xAE60},
		"KVM_IRQ_LINE":               {ioctlIRQLine, 0x4008AE61},
		"KVM_CREATE_PIT2":            {ioctlCreatePIT2, 0x4040AE77},
		"KVM_SET_CLOCK":              {ioctlSetClock, 0x4030AE7B},
		"KVM_GET_CLOCK":              {ioctlGetClock, 0x8030AE7C},
		"KVM_RUN":                    {ioctlRun, 0xAE80},
		"KVM_GET_REGS":               {ioctlGetRegs, 0x8090AE81},
		"KVM_SET_REGS":               {ioctlSetRegs, 0x4090AE82},
		"KVM_GET_SREGS":              {ioctlGetSregs, 0x8138AE83},
		"KVM_SET_SREGS":              {ioctlSetSregs, 0x4138AE84},
		"KVM_GET_MSRS":               {ioctlGetMSRs, 0xC008AE88},
		"KVM_SET_MSRS":               {ioctlSetMSRs, 0x4008AE89},
		"KVM_GET_FPU":                {ioctlGetFPU, 0x81A0AE8C},
		"KVM_SET_FPU":                {ioctlSetFPU, 0x41A0AE8D},
		"KVM_GET_LAPIC":              {ioctlGetLAPIC, 0x8400AE8E},
		"KVM_SET_LAPIC":              {ioctlSetLAPIC, 0x4400AE8F},
		"KVM_SET_CPUID2":             {ioctlSetCPUID2, 0x4008AE90},
		"KVM_GET_MP_STATE":           {ioctlGetMPState, 0x8004AE98},
		"KVM_SET_MP_STATE":           {ioctlSetMPState, 0x4004AE99},
		"KVM_SET_XCRS":               {ioctlSetXCRS, 0x4188AEA7},
	} {
		assert.Equal(t, c.want, c.got, "%s = %#x, kernel says %#x", name, c.got, c.want)
	}
}

// struct kvm_run on x86-64, as <linux/kvm.h> (include/uapi/linux/kvm.h)
// lays it out: offsets from the start of the mmap'ed area, taken from the
// header and confirmed with offsetof() in a C build against linux-libc-dev
// 6.1. The exit union starts at 32 (no s390 psw fields on x86).
const (
	abiRunRequestInterruptWindow     = 0  // __u8 request_interrupt_window
	abiRunImmediateExit              = 1  // __u8 immediate_exit
	abiRunExitReason                 = 8  // __u32 exit_reason
	abiRunReadyForInterruptInjection = 12 // __u8 ready_for_interrupt_injection
	abiRunIfFlag                     = 13 // __u8 if_flag
	abiRunFlags                      = 14 // __u16 flags
	abiRunCR8                        = 16 // __u64 cr8
	abiRunAPICBase                   = 24 // __u64 apic_base
	abiRunUnion                      = 32 // union { ... } (256 bytes of padding)

	abiIODirection  = 32 // io.direction (KVM_EXIT_IO_IN 0, KVM_EXIT_IO_OUT 1)
	abiIOSize       = 33 // io.size, bytes
	abiIOPort       = 34 // io.port
	abiIOCount      = 36 // io.count
	abiIODataOffset = 40 // io.data_offset, from the start of kvm_run

	abiMMIOPhysAddr = 32 // mmio.phys_addr
	abiMMIOData     = 40 // mmio.data[8]
	abiMMIOLen      = 48 // mmio.len
	abiMMIOIsWrite  = 52 // mmio.is_write

	abiSystemEventType  = 32 // system_event.type
	abiSystemEventNData = 36 // system_event.ndata (padding before Linux 5.18)
	abiSystemEventFlags = 40 // system_event.flags, union with data[16]
	abiSystemEventData  = 40 // system_event.data[16]

	abiInternalSuberror = 32 // internal.suberror
	abiInternalNData    = 36 // internal.ndata
	abiInternalData     = 40 // internal.data[16]

	abiFailEntryReason = 32 // fail_entry.hardware_entry_failure_reason
)

// kvmRunABI transcribes the head of struct kvm_run field by field.
type kvmRunABI struct {
	RequestInterruptWindow     uint8
	ImmediateExit              uint8
	Padding1                   [6]uint8
	ExitReason                 uint32
	ReadyForInterruptInjection uint8
	IfFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	APICBase                   uint64
	Union                      [256]byte
}

// kvmRunIOABI, kvmRunMMIOABI and kvmRunSystemEventABI transcribe the io,
// mmio and system_event members of the exit union.
type kvmRunIOABI struct {
	Direction  uint8
	Size       uint8
	Port       uint16
	Count      uint32
	DataOffset uint64
}

type kvmRunMMIOABI struct {
	PhysAddr uint64
	Data     [8]uint8
	Len      uint32
	IsWrite  uint8
}

type kvmRunSystemEventABI struct {
	Type  uint32
	NData uint32
	Data  [16]uint64 // Data[0] is flags
}

// TestKVMRunLayout proves the kvm_run offsets kvm.go uses are the kernel's:
// runImmediateExit, runExitReason and runExitUnion equal the <linux/kvm.h>
// offsets of immediate_exit, exit_reason and the exit union, and a Go
// transcription of the C declarations puts exit_reason,
// ready_for_interrupt_injection, if_flag, the union and its io, mmio and
// system_event members at the header's numbers (so the abi* table the
// decoder test writes through is the kernel's layout, not a guess).
func TestKVMRunLayout(t *testing.T) {
	assert.EqualValues(t, abiRunImmediateExit, runImmediateExit, "runImmediateExit = offsetof(kvm_run, immediate_exit)")
	assert.EqualValues(t, abiRunExitReason, runExitReason, "runExitReason = offsetof(kvm_run, exit_reason)")
	assert.EqualValues(t, abiRunUnion, runExitUnion, "runExitUnion = offset of kvm_run's exit union")

	var r kvmRunABI
	for name, c := range map[string]struct{ got, want uintptr }{
		"request_interrupt_window":      {unsafe.Offsetof(r.RequestInterruptWindow), abiRunRequestInterruptWindow},
		"immediate_exit":                {unsafe.Offsetof(r.ImmediateExit), abiRunImmediateExit},
		"exit_reason":                   {unsafe.Offsetof(r.ExitReason), abiRunExitReason},
		"ready_for_interrupt_injection": {unsafe.Offsetof(r.ReadyForInterruptInjection), abiRunReadyForInterruptInjection},
		"if_flag":                       {unsafe.Offsetof(r.IfFlag), abiRunIfFlag},
		"flags":                         {unsafe.Offsetof(r.Flags), abiRunFlags},
		"cr8":                           {unsafe.Offsetof(r.CR8), abiRunCR8},
		"apic_base":                     {unsafe.Offsetof(r.APICBase), abiRunAPICBase},
		"union":                         {unsafe.Offsetof(r.Union), abiRunUnion},

		"io.direction":   {abiRunUnion + unsafe.Offsetof(kvmRunIOABI{}.Direction), abiIODirection},
		"io.size":        {abiRunUnion + unsafe.Offsetof(kvmRunIOABI{}.Size), abiIOSize},
		"io.port":        {abiRunUnion + unsafe.Offsetof(kvmRunIOABI{}.Port), abiIOPort},
		"io.count":       {abiRunUnion + unsafe.Offsetof(kvmRunIOABI{}.Count), abiIOCount},
		"io.data_offset": {abiRunUnion + unsafe.Offsetof(kvmRunIOABI{}.DataOffset), abiIODataOffset},

		"mmio.phys_addr": {abiRunUnion + unsafe.Offsetof(kvmRunMMIOABI{}.PhysAddr), abiMMIOPhysAddr},
		"mmio.data":      {abiRunUnion + unsafe.Offsetof(kvmRunMMIOABI{}.Data), abiMMIOData},
		"mmio.len":       {abiRunUnion + unsafe.Offsetof(kvmRunMMIOABI{}.Len), abiMMIOLen},
		"mmio.is_write":  {abiRunUnion + unsafe.Offsetof(kvmRunMMIOABI{}.IsWrite), abiMMIOIsWrite},

		"system_event.type":  {abiRunUnion + unsafe.Offsetof(kvmRunSystemEventABI{}.Type), abiSystemEventType},
		"system_event.ndata": {abiRunUnion + unsafe.Offsetof(kvmRunSystemEventABI{}.NData), abiSystemEventNData},
		"system_event.flags": {abiRunUnion + unsafe.Offsetof(kvmRunSystemEventABI{}.Data), abiSystemEventFlags},
		"system_event.data":  {abiRunUnion + unsafe.Offsetof(kvmRunSystemEventABI{}.Data), abiSystemEventData},
	} {
		assert.Equal(t, c.want, c.got, "offsetof(struct kvm_run, %s)", name)
	}
	assert.EqualValues(t, 16, unsafe.Sizeof(kvmRunIOABI{}), "sizeof io")
	assert.EqualValues(t, 24, unsafe.Sizeof(kvmRunMMIOABI{}), "sizeof mmio")
	assert.EqualValues(t, 136, unsafe.Sizeof(kvmRunSystemEventABI{}), "sizeof system_event")
	assert.LessOrEqual(t, unsafe.Sizeof(kvmRunSystemEventABI{}), uintptr(len(r.Union)), "system_event fits the 256-byte union")
}

// TestKVMRunExitCodes proves the exit reasons and system event types Run's
// callers compare exit_reason and system_event.type with are the values
// <linux/kvm.h> defines.
func TestKVMRunExitCodes(t *testing.T) {
	for name, c := range map[string]struct{ got, want int }{
		"KVM_EXIT_UNKNOWN":          {ExitUnknown, 0},
		"KVM_EXIT_EXCEPTION":        {ExitException, 1},
		"KVM_EXIT_IO":               {ExitIO, 2},
		"KVM_EXIT_HYPERCALL":        {ExitHypercall, 3},
		"KVM_EXIT_DEBUG":            {ExitDebug, 4},
		"KVM_EXIT_HLT":              {ExitHLT, 5},
		"KVM_EXIT_MMIO":             {ExitMMIO, 6},
		"KVM_EXIT_IRQ_WINDOW_OPEN":  {ExitIRQWindowOpen, 7},
		"KVM_EXIT_SHUTDOWN":         {ExitShutdown, 8},
		"KVM_EXIT_FAIL_ENTRY":       {ExitFailEntry, 9},
		"KVM_EXIT_INTR":             {ExitIntr, 10},
		"KVM_EXIT_INTERNAL_ERROR":   {ExitInternalError, 17},
		"KVM_EXIT_SYSTEM_EVENT":     {ExitSystemEvent, 24},
		"KVM_SYSTEM_EVENT_SHUTDOWN": {SystemEventShutdown, 1},
		"KVM_SYSTEM_EVENT_RESET":    {SystemEventReset, 2},
		"KVM_SYSTEM_EVENT_CRASH":    {SystemEventCrash, 3},
	} {
		assert.Equal(t, c.want, c.got, name)
	}
}

// fakeRun returns a vCPU whose kvm_run area is a plain buffer filled with
// 0xA5, so a decoder reading the wrong byte sees junk rather than a
// plausible zero.
func fakeRun(size int) (*VCPU, []byte) {
	run := make([]byte, size)
	for i := range run {
		run[i] = 0xA5
	}
	return &VCPU{ID: 7, run: run}, run
}

// TestKVMRunDecoders proves the accessors of kvm.go read the exit union at
// the kernel's offsets: a kvm_run area written byte by byte at the
// <linux/kvm.h> offsets of io, mmio, system_event, internal and fail_entry
// decodes to those values (IO and MMIO data alias the area at data_offset
// and mmio.data), and Kick/ClearKick set and clear immediate_exit alone.
// A wrong offset literal in IO, MMIO, SystemEventType, InternalError,
// FailEntryReason or Kick fails it.
func TestKVMRunDecoders(t *testing.T) {
	le := binary.LittleEndian

	t.Run("io out", func(t *testing.T) {
		c, run := fakeRun(4096)
		run[abiIODirection] = 1 // KVM_EXIT_IO_OUT
		run[abiIOSize] = 2
		le.PutUint16(run[abiIOPort:], 0x3f8)
		le.PutUint32(run[abiIOCount:], 3)
		le.PutUint64(run[abiIODataOffset:], 0x200)
		copy(run[0x200:], []byte{1, 2, 3, 4, 5, 6})
		io, err := c.IO()
		require.NoError(t, err)
		assert.True(t, io.Out)
		assert.Equal(t, 2, io.Size)
		assert.Equal(t, uint16(0x3f8), io.Port)
		require.Len(t, io.Data, 6, "count*size bytes")
		assert.Equal(t, []byte{1, 2, 3, 4, 5, 6}, io.Data)
		assert.Same(t, &run[0x200], &io.Data[0], "Data aliases kvm_run at data_offset")
	})
	t.Run("io in", func(t *testing.T) {
		c, run := fakeRun(4096)
		run[abiIODirection] = 0 // KVM_EXIT_IO_IN
		run[abiIOSize] = 4
		le.PutUint16(run[abiIOPort:], 0x608)
		le.PutUint32(run[abiIOCount:], 1)
		le.PutUint64(run[abiIODataOffset:], 0x1000-4)
		io, err := c.IO()
		require.NoError(t, err)
		assert.False(t, io.Out)
		assert.Equal(t, 4, io.Size)
		assert.Equal(t, uint16(0x608), io.Port)
		require.Len(t, io.Data, 4)
		io.Data[0] = 0x42 // the VMM's answer lands where KVM reads it
		assert.Equal(t, byte(0x42), run[0x1000-4])
	})
	t.Run("io malformed", func(t *testing.T) {
		c, run := fakeRun(4096)
		run[abiIODirection] = 1
		run[abiIOSize] = 1
		le.PutUint16(run[abiIOPort:], 0x3f8)
		le.PutUint32(run[abiIOCount:], 2)
		le.PutUint64(run[abiIODataOffset:], 4095) // 2 bytes from 4095 overrun
		_, err := c.IO()
		require.ErrorContains(t, err, "malformed io exit")
	})
	t.Run("mmio", func(t *testing.T) {
		for _, write := range []bool{false, true} {
			c, run := fakeRun(4096)
			le.PutUint64(run[abiMMIOPhysAddr:], 0xFEC00010)
			copy(run[abiMMIOData:], []byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88})
			le.PutUint32(run[abiMMIOLen:], 4)
			run[abiMMIOIsWrite] = 0
			if write {
				run[abiMMIOIsWrite] = 1
			}
			m := c.MMIO()
			assert.Equal(t, uint64(0xFEC00010), m.Addr)
			assert.Equal(t, write, m.Write)
			require.Len(t, m.Data, 4, "mmio.len bytes")
			assert.Equal(t, []byte{0x11, 0x22, 0x33, 0x44}, m.Data)
			assert.Same(t, &run[abiMMIOData], &m.Data[0], "Data aliases mmio.data")
		}
	})
	t.Run("system event", func(t *testing.T) {
		c, run := fakeRun(4096)
		le.PutUint32(run[abiSystemEventType:], SystemEventReset)
		le.PutUint32(run[abiSystemEventNData:], 1)
		le.PutUint64(run[abiSystemEventData:], 0)
		assert.Equal(t, uint32(SystemEventReset), c.SystemEventType())
	})
	t.Run("internal error", func(t *testing.T) {
		c, run := fakeRun(4096)
		le.PutUint32(run[abiInternalSuberror:], 1)
		le.PutUint32(run[abiInternalNData:], 2)
		le.PutUint64(run[abiInternalData:], 0x11)
		le.PutUint64(run[abiInternalData+8:], 0x22)
		assert.Equal(t, "suberror 1 data[0]=0x11 data[1]=0x22", c.InternalError())
	})
	t.Run("fail entry", func(t *testing.T) {
		c, run := fakeRun(4096)
		le.PutUint64(run[abiFailEntryReason:], 0x80000021)
		assert.Equal(t, uint64(0x80000021), c.FailEntryReason())
	})
	t.Run("kick", func(t *testing.T) {
		c, run := fakeRun(4096)
		run[abiRunImmediateExit] = 0
		before := append([]byte(nil), run...)
		c.Kick()
		assert.Equal(t, byte(1), run[abiRunImmediateExit], "Kick sets immediate_exit")
		c.ClearKick()
		assert.Equal(t, byte(0), run[abiRunImmediateExit], "ClearKick clears immediate_exit")
		assert.Equal(t, before, run, "only immediate_exit is touched")
	})
}
