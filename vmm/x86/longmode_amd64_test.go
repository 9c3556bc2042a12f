package x86

import (
	"encoding/binary"
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/vmm/kvm"
)

type byteMem []byte

func (m byteMem) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

// TestLongModeGuest proves the boot GDT, page tables, long-mode sregs,
// CPUID and MSRs are accepted by KVM and put a vCPU straight into 64-bit
// mode, on a machine shaped like the real one (in-kernel irqchip and PIT).
// The guest writes 'L' to COM1, then the two halves of a 64-bit register
// to a "done" port; it cannot end in hlt, which the in-kernel irqchip keeps
// inside KVM.
func TestLongModeGuest(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	sys, err := kvm.OpenSystem()
	require.NoError(t, err, "this test needs /dev/kvm")
	defer sys.Close()
	vm, mem := newBootVM(t, sys)

	const done = 0x501
	code := []byte{
		0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'L', // mov al, 'L'
		0xee,                                                       // out dx, al
		0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // mov rax, 0x1122334455667788
		0x48, 0x89, 0xc3, // mov rbx, rax
		0x48, 0xc1, 0xeb, 0x20, // shr rbx, 32
		0x66, 0xba, done & 0xff, done >> 8, // mov dx, done
		0xef,       // out dx, eax  (low half)
		0x89, 0xd8, // mov eax, ebx
		0xef,       // out dx, eax  (high half)
		0xeb, 0xfe, // jmp $
	}
	copy(mem[HighMemStart:], code)

	supported, err := sys.SupportedCPUID()
	require.NoError(t, err)
	cpu, err := vm.CreateVCPU(0)
	require.NoError(t, err)
	defer cpu.Close()
	require.NoError(t, cpu.SetCPUID(CPUID(supported, 0, 1)))
	require.NoError(t, cpu.SetMSRs(BootMSRs()))
	sregs, err := cpu.Sregs()
	require.NoError(t, err)
	require.NoError(t, cpu.SetSregs(LongModeSregs(sregs)))
	require.NoError(t, cpu.SetRegs(kvm.Regs{RIP: HighMemStart, RSP: BootStackTop, RFLAGS: 2}))
	require.NoError(t, cpu.SetFPU(InitialFPU()))

	var serial []byte
	var halves []uint32
	for len(halves) < 2 {
		reason, err := cpu.Run()
		require.NoError(t, err)
		if reason == kvm.ExitIntr {
			continue
		}
		require.Equal(t, kvm.ExitName(kvm.ExitIO), kvm.ExitName(reason))
		io, err := cpu.IO()
		require.NoError(t, err)
		switch io.Port {
		case 0x3f8:
			serial = append(serial, io.Data...)
		case done:
			halves = append(halves, binary.LittleEndian.Uint32(io.Data))
		default:
			t.Fatalf("unexpected port %#x", io.Port)
		}
	}
	require.Equal(t, "L", string(serial))
	require.Equal(t, []uint32{0x55667788, 0x11223344}, halves, "a 64-bit register survived: the vCPU runs in long mode")
	s, err := cpu.Sregs()
	require.NoError(t, err)
	require.NotZero(t, s.EFER&eferLMA, "EFER.LMA set")
}

// TestGDTEntryEncoding proves the descriptors match the values Linux's own
// GDT_ENTRY macro gives for the boot segments.
func TestGDTEntryEncoding(t *testing.T) {
	require.Equal(t, uint64(0x00af9b000000ffff), BootGDT[2])
	require.Equal(t, uint64(0x00cf93000000ffff), BootGDT[3])
	cs := segmentFromGDT(BootGDT[2], BootCS)
	require.EqualValues(t, 1, cs.L)
	require.EqualValues(t, 0xb, cs.Type)
	require.EqualValues(t, 0xffffffff, cs.Limit)
}

// newBootVM is a VM with an irqchip and PIT, 4 MiB of RAM at 0 and the
// boot tables (GDT, page tables) written: ready for a long-mode vCPU.
// It is closed when the test ends.
func newBootVM(t *testing.T, sys *kvm.System) (*kvm.VM, []byte) {
	t.Helper()
	vm, err := sys.CreateVM()
	require.NoError(t, err)
	t.Cleanup(func() { vm.Close() })
	require.NoError(t, vm.SetTSSAddr(TSSAddr))
	require.NoError(t, vm.SetIdentityMapAddr(IdentityMapAddr))
	require.NoError(t, vm.CreateIRQChip())
	require.NoError(t, vm.CreatePIT2(kvm.PITSpeakerDummy))
	const size = 4 << 20
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Munmap(mem) })
	require.NoError(t, vm.SetUserMemoryRegion(0, 0, size, uintptr(unsafe.Pointer(&mem[0]))))
	require.NoError(t, WriteBootTables(byteMem(mem)))
	return vm, mem
}
