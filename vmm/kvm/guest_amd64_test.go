package kvm

import (
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// openSystem opens /dev/kvm or fails the test saying why: these tests prove
// the KVM layer on real hardware virtualization and must not pass without it.
func openSystem(t *testing.T) *System {
	t.Helper()
	s, err := OpenSystem()
	require.NoError(t, err, "these tests need /dev/kvm (load kvm_intel/kvm_amd, run as root)")
	t.Cleanup(func() { s.Close() })
	return s
}

// guestRAM maps anonymous memory for a tiny guest and registers it at gpa 0.
func guestRAM(t *testing.T, vm *VM, size int) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Munmap(mem) })
	require.NoError(t, vm.SetUserMemoryRegion(0, 0, uint64(size), hostAddr(mem)))
	return mem
}

// TestRealModeGuestOutAndHLT proves vCPU creation, real-mode register setup,
// port-I/O exits (direction, port, size, data) and the HLT exit, with a
// 16-bit guest that writes "Hi\n" to the COM1 data port and halts.
func TestRealModeGuestOutAndHLT(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	s := openSystem(t)
	vm, err := s.CreateVM()
	require.NoError(t, err)
	defer vm.Close()
	mem := guestRAM(t, vm, 1<<20)

	code := []byte{
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'H', 0xee, // mov al, 'H'; out dx, al
		0xb0, 'i', 0xee, // mov al, 'i'; out dx, al
		0xb0, '\n', 0xee, // mov al, '\n'; out dx, al
		0x66, 0xb8, 0x78, 0x56, 0x34, 0x12, // mov eax, 0x12345678
		0xba, 0x04, 0x06, // mov dx, 0x604
		0x66, 0xef, // out dx, eax
		0xf4, // hlt
	}
	copy(mem[0x1000:], code)

	cpu, err := vm.CreateVCPU(0)
	require.NoError(t, err)
	defer cpu.Close()
	sregs, err := cpu.Sregs()
	require.NoError(t, err)
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	require.NoError(t, cpu.SetSregs(sregs))
	require.NoError(t, cpu.SetRegs(Regs{RIP: 0x1000, RFLAGS: 2}))

	var out []byte
	var wide uint32
	for {
		reason, err := cpu.Run()
		require.NoError(t, err)
		if reason == ExitIntr {
			continue
		}
		if reason == ExitHLT {
			break
		}
		require.Equal(t, ExitName(ExitIO), ExitName(reason))
		io, err := cpu.IO()
		require.NoError(t, err)
		require.True(t, io.Out)
		switch io.Port {
		case 0x3f8:
			require.Equal(t, 1, io.Size)
			out = append(out, io.Data...)
		case 0x604:
			require.Equal(t, 4, io.Size)
			wide = uint32(io.Data[0]) | uint32(io.Data[1])<<8 | uint32(io.Data[2])<<16 | uint32(io.Data[3])<<24
		default:
			t.Fatalf("unexpected port %#x", io.Port)
		}
	}
	require.Equal(t, "Hi\n", string(out))
	require.Equal(t, uint32(0x12345678), wide)
	regs, err := cpu.Regs()
	require.NoError(t, err)
	require.Equal(t, uint64(0x1000+len(code)), regs.RIP, "RIP must point past the hlt")
}

// TestRealModeGuestPortIn proves an IN exit: the VMM's answer lands in the
// guest's register (the guest echoes the byte it read back out).
func TestRealModeGuestPortIn(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	s := openSystem(t)
	vm, err := s.CreateVM()
	require.NoError(t, err)
	defer vm.Close()
	mem := guestRAM(t, vm, 1<<20)
	copy(mem[0x1000:], []byte{
		0xba, 0xfd, 0x03, // mov dx, 0x3fd
		0xec,             // in al, dx
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xee, // out dx, al
		0xf4, // hlt
	})
	cpu, err := vm.CreateVCPU(0)
	require.NoError(t, err)
	defer cpu.Close()
	sregs, err := cpu.Sregs()
	require.NoError(t, err)
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	require.NoError(t, cpu.SetSregs(sregs))
	require.NoError(t, cpu.SetRegs(Regs{RIP: 0x1000, RFLAGS: 2}))

	var echoed byte
	for {
		reason, err := cpu.Run()
		require.NoError(t, err)
		if reason == ExitIntr {
			continue
		}
		if reason == ExitHLT {
			break
		}
		io, err := cpu.IO()
		require.NoError(t, err)
		if io.Out {
			echoed = io.Data[0]
		} else {
			require.Equal(t, uint16(0x3fd), io.Port)
			io.Data[0] = 0x60
		}
	}
	require.Equal(t, byte(0x60), echoed)
}

// TestKickInterruptsRun proves Kick makes KVM_RUN return ExitIntr even
// when the guest spins forever, which is how the VMM stops vCPUs.
func TestKickInterruptsRun(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	s := openSystem(t)
	vm, err := s.CreateVM()
	require.NoError(t, err)
	defer vm.Close()
	mem := guestRAM(t, vm, 1<<20)
	copy(mem[0x1000:], []byte{0xeb, 0xfe}) // jmp $
	cpu, err := vm.CreateVCPU(0)
	require.NoError(t, err)
	defer cpu.Close()
	sregs, err := cpu.Sregs()
	require.NoError(t, err)
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	require.NoError(t, cpu.SetSregs(sregs))
	require.NoError(t, cpu.SetRegs(Regs{RIP: 0x1000, RFLAGS: 2}))
	cpu.BindThread()
	defer cpu.UnbindThread()

	// The kick comes while the guest spins inside KVM_RUN: only the signal
	// can get it out.
	go func() {
		time.Sleep(50 * time.Millisecond)
		cpu.Kick()
	}()
	for {
		reason, err := cpu.Run()
		require.NoError(t, err)
		if reason == ExitIntr {
			return
		}
		t.Fatalf("unexpected exit %s", ExitName(reason))
	}
}
