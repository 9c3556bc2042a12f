package x86

import (
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm/kvm"
)

// TestGuestSeesXSaveSizeOfItsXCR0 does what Linux's fpu__init_system_xstate
// does at boot: enable every XSAVE component leaf 0xD offers (CR4.OSXSAVE,
// XSETBV), then read CPUID 0xD.0 EBX, the XSAVE area size for the enabled
// XCR0, which it compares with the size the sub-leaves' offsets and sizes
// give. A mismatch is the "XSAVE consistency problem" WARNING that taints
// the guest.
func TestGuestSeesXSaveSizeOfItsXCR0(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	sys, err := kvm.OpenSystem()
	require.NoError(t, err, "this test needs /dev/kvm")
	defer sys.Close()
	supported, err := sys.SupportedCPUID()
	require.NoError(t, err)
	leaves := CPUID(supported, 0, 1)
	xcr0 := OfferedXCR0(leaves)
	if xcr0 == 0 {
		// This KVM offers no XSAVE: what matters then is that the guest is
		// told so, so that it never enables XSAVE or reads a leaf 0xD.
		l1 := findLeaf(leaves, 1, 0)
		require.NotNil(t, l1, "the guest's CPUID has leaf 1")
		assert.Zero(t, l1.ECX&cpuid1ECXXSAVE, "no XSAVE offered: leaf 1 ECX.XSAVE must be clear for the guest")
		assert.Nil(t, findLeaf(leaves, 0xd, 0), "no XSAVE offered: the guest must see no leaf 0xD")
		t.Log("this KVM offers no XSAVE: checked that the guest is told so (the XSETBV path runs in the lab, whose KVM offers it)")
		return
	}
	want := xsaveSize(leaves, xcr0)

	vm, mem := newBootVM(t, sys)

	const done = 0x501
	code := []byte{
		0x0f, 0x20, 0xe0, // mov rax, cr4
		0x0d, 0x00, 0x00, 0x04, 0x00, // or eax, CR4.OSXSAVE
		0x0f, 0x22, 0xe0, // mov cr4, rax
		0x31, 0xc9, // xor ecx, ecx
		0xb8, 0, 0, 0, 0, // mov eax, xcr0 (low)
		0xba, 0, 0, 0, 0, // mov edx, xcr0 (high)
		0x0f, 0x01, 0xd1, // xsetbv
		0xb8, 0x0d, 0x00, 0x00, 0x00, // mov eax, 0xd
		0x31, 0xc9, // xor ecx, ecx
		0x0f, 0xa2, // cpuid
		0x89, 0xd8, // mov eax, ebx
		0x66, 0xba, done & 0xff, done >> 8, // mov dx, done
		0xef,       // out dx, eax
		0xeb, 0xfe, // jmp $
	}
	binary.LittleEndian.PutUint32(code[14:], uint32(xcr0))
	binary.LittleEndian.PutUint32(code[19:], uint32(xcr0>>32))
	copy(mem[HighMemStart:], code)

	cpu, err := vm.CreateVCPU(0)
	require.NoError(t, err)
	defer cpu.Close()
	require.NoError(t, cpu.SetCPUID(leaves))
	require.NoError(t, SetBootXCR0(cpu, leaves))
	require.NoError(t, cpu.SetMSRs(BootMSRs()))
	sregs, err := cpu.Sregs()
	require.NoError(t, err)
	require.NoError(t, cpu.SetSregs(LongModeSregs(sregs)))
	require.NoError(t, cpu.SetRegs(kvm.Regs{RIP: HighMemStart, RSP: BootStackTop, RFLAGS: 2}))
	require.NoError(t, cpu.SetFPU(InitialFPU()))

	for {
		reason, err := cpu.Run()
		require.NoError(t, err)
		if reason == kvm.ExitIntr {
			continue
		}
		require.Equal(t, kvm.ExitName(kvm.ExitIO), kvm.ExitName(reason))
		io, err := cpu.IO()
		require.NoError(t, err)
		require.Equal(t, uint16(done), io.Port)
		got := binary.LittleEndian.Uint32(io.Data)
		require.Equal(t, want, got, "CPUID 0xD.0 EBX after XSETBV(%#x): the XSAVE size Linux checks (%d from the sub-leaves)", xcr0, want)
		return
	}
}
