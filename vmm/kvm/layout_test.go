package kvm

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
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
	} {
		assert.Equal(t, c.want, c.got, "%s = %#x, kernel says %#x", name, c.got, c.want)
	}
}
