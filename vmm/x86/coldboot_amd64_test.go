package x86

import (
	"bytes"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm/x86/x86test"
)

// coldBootWrites does what a cold boot writes into guest RAM, less the ACPI
// tables (package vmm's): the first MiB cleared, the boot GDT, IDT and page
// tables, the kernel, command line, initrd and zero page.
func coldBootWrites(t *testing.T, mem byteMem, ram []RAMRange) *Boot {
	t.Helper()
	k, err := ParseBzImage(x86test.BzImage([]byte{0xeb, 0xfe}))
	require.NoError(t, err)
	require.NoError(t, ClearFirstMiB(mem))
	require.NoError(t, WriteBootTables(mem))
	b, err := k.Load(mem, BootSpec{Cmdline: "console=ttyS0 quiet", Initrd: bytes.Repeat([]byte("initrd"), 100000), RAM: ram, RSDPAddr: ACPITablesAddr})
	require.NoError(t, err)
	return b
}

// TestColdBootDependsOnNothingLeftInRAM: a cold boot over RAM full of
// random bytes (what persistent memory may hold from its last user) leaves
// every byte the guest reads before writing it (the first MiB, the kernel,
// the initrd) exactly as a cold boot over zeroed RAM does.
func TestColdBootDependsOnNothingLeftInRAM(t *testing.T) {
	const size = 32 * mib
	ram := []RAMRange{{GuestPhys: 0, Size: size}}
	clean := make(byteMem, size)
	want := coldBootWrites(t, clean, ram)
	for seed := int64(1); seed <= 5; seed++ {
		dirty := make(byteMem, size)
		rand.New(rand.NewSource(seed)).Read(dirty)
		got := coldBootWrites(t, dirty, ram)
		require.Equal(t, want, got)
		for _, r := range []struct {
			name       string
			start, end uint64
		}{
			{"the first MiB (BIOS data area, GDT, IDT, zero page, page tables, command line, EBDA, ACPI area)", 0, HighMemStart},
			{"the kernel", HighMemStart, got.KernelEnd},
			{"the initrd", got.InitrdAddr, got.InitrdAddr + 600000},
		} {
			if !bytes.Equal(clean[r.start:r.end], dirty[r.start:r.end]) {
				i := 0
				for clean[int(r.start)+i] == dirty[int(r.start)+i] {
					i++
				}
				t.Fatalf("seed %d: %s differs from a boot over zeroed RAM first at %#x: pmvm left a byte there it did not write", seed, r.name, r.start+uint64(i))
			}
		}
	}
}
