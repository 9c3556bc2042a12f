package x86

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const mib = 1 << 20
const gib = 1 << 30

// TestPlaceRAMSkipsTheMMIOGap proves RAM never overlaps the 3-4 GiB window
// and that a block crossing it is split into two slots, continuing at 4 GiB.
func TestPlaceRAMSkipsTheMMIOGap(t *testing.T) {
	got, err := PlaceRAM([]uint64{2 * gib, 2 * gib})
	require.NoError(t, err)
	assert.Equal(t, []RAMRange{
		{Block: 0, GuestPhys: 0, BlockOffset: 0, Size: 2 * gib},
		{Block: 1, GuestPhys: 2 * gib, BlockOffset: 0, Size: 1 * gib},
		{Block: 1, GuestPhys: 4 * gib, BlockOffset: 1 * gib, Size: 1 * gib},
	}, got)
}

// TestPlaceRAMIsDeterministic proves the layout only depends on sizes.
func TestPlaceRAMIsDeterministic(t *testing.T) {
	a, err := PlaceRAM([]uint64{512 * mib, 256 * mib})
	require.NoError(t, err)
	b, err := PlaceRAM([]uint64{512 * mib, 256 * mib})
	require.NoError(t, err)
	assert.Equal(t, a, b)
	assert.Equal(t, uint64(512*mib), a[1].GuestPhys)
}

// TestPlaceRAMRefusals proves the layout refuses what cannot boot.
func TestPlaceRAMRefusals(t *testing.T) {
	_, err := PlaceRAM(nil)
	assert.Error(t, err)
	_, err = PlaceRAM([]uint64{8 * mib})
	assert.ErrorContains(t, err, "at least 16 MiB")
	_, err = PlaceRAM([]uint64{64 * mib, 0})
	assert.Error(t, err)
}

// TestE820MatchesSlots proves every byte of every RAM range appears in the
// e820 map exactly once, and nothing else does.
func TestE820MatchesSlots(t *testing.T) {
	for _, sizes := range [][]uint64{{512 * mib}, {2 * gib, 2 * gib}, {64 * mib, 2 * mib, 4 * gib}} {
		ram, err := PlaceRAM(sizes)
		require.NoError(t, err)
		e820, err := E820(ram)
		require.NoError(t, err)
		var ramBytes, e820Bytes uint64
		for _, r := range ram {
			ramBytes += r.Size
		}
		for i, e := range e820 {
			e820Bytes += e.Size
			inSomeRange := false
			for _, r := range ram {
				if e.Addr >= r.GuestPhys && e.Addr+e.Size <= r.End() {
					inSomeRange = true
				}
			}
			assert.True(t, inSomeRange, "entry %d %#x+%#x lies inside one slot", i, e.Addr, e.Size)
			if i > 0 {
				assert.GreaterOrEqual(t, e.Addr, e820[i-1].Addr+e820[i-1].Size, "entries sorted, not overlapping")
			}
		}
		assert.Equal(t, ramBytes, e820Bytes, "sizes %v", sizes)
		assert.Equal(t, E820Entry{Addr: 0, Size: EBDAStart, Type: E820RAM}, e820[0])
		assert.Equal(t, E820Entry{Addr: EBDAStart, Size: HighMemStart - EBDAStart, Type: E820Reserved}, e820[1])
	}
}

// fakeBzImage builds the smallest image with a valid 2.15 setup header.
func fakeBzImage(pmSize int) []byte {
	img := make([]byte, 5*512+pmSize)
	img[hdrSetupSects] = 4
	img[hdrJumpEnd] = 0x6a // header ends at 0x26c
	copy(img[hdrMagic:], "HdrS")
	binary.LittleEndian.PutUint16(img[hdrVersion:], 0x020f)
	img[hdrLoadFlags] = loadFlagLoadedHigh
	img[hdrXLoadFlags] = xlfKernel64
	binary.LittleEndian.PutUint32(img[hdrInitrdAddrMax:], 0x7fffffff)
	binary.LittleEndian.PutUint32(img[hdrCmdlineSize:], 2047)
	binary.LittleEndian.PutUint32(img[hdrInitSize:], 8*mib)
	for i := 5 * 512; i < len(img); i++ {
		img[i] = 0xcc
	}
	return img
}

type memBuf []byte

func (m memBuf) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

// TestLoadWritesTheZeroPage proves the kernel, command line, initrd and the
// zero page fields Linux reads land where the boot protocol says.
func TestLoadWritesTheZeroPage(t *testing.T) {
	k, err := ParseBzImage(fakeBzImage(4096))
	require.NoError(t, err)
	ram, err := PlaceRAM([]uint64{64 * mib})
	require.NoError(t, err)
	mem := make(memBuf, 64*mib)
	initrd := []byte("initrd-bytes")
	b, err := k.Load(mem, BootSpec{Cmdline: "console=ttyS0", Initrd: initrd, RAM: ram, RSDPAddr: 0xe0000})
	require.NoError(t, err)

	assert.Equal(t, uint64(HighMemStart+0x200), b.Entry)
	assert.Equal(t, byte(0xcc), mem[HighMemStart])
	assert.Equal(t, "console=ttyS0\x00", string(mem[CmdlineAddr:CmdlineAddr+14]))
	zp := mem[ZeroPageAddr : ZeroPageAddr+zeroPageSize]
	assert.Equal(t, "HdrS", string(zp[hdrMagic:hdrMagic+4]))
	assert.Equal(t, uint32(CmdlineAddr), binary.LittleEndian.Uint32(zp[hdrCmdLinePtr:]))
	assert.Equal(t, byte(0xff), zp[hdrTypeOfLoader])
	assert.Equal(t, uint64(0xe0000), binary.LittleEndian.Uint64(zp[zpACPIRSDPAddr:]))
	rdAddr := binary.LittleEndian.Uint32(zp[hdrRamdiskImage:])
	assert.Equal(t, uint32(len(initrd)), binary.LittleEndian.Uint32(zp[hdrRamdiskSize:]))
	assert.Equal(t, string(initrd), string(mem[rdAddr:int(rdAddr)+len(initrd)]))
	assert.Zero(t, rdAddr%4096, "initrd page aligned")
	assert.Equal(t, byte(len(b.E820)), zp[zpE820Entries])
	last := b.E820[len(b.E820)-1]
	o := zpE820Table + (len(b.E820)-1)*e820EntrySize
	assert.Equal(t, last.Addr, binary.LittleEndian.Uint64(zp[o:]))
	assert.Equal(t, uint64(64*mib), last.Addr+last.Size)
}

// TestParseBzImageRefusals proves files that are not bootable bzImages are
// refused with a reason.
func TestParseBzImageRefusals(t *testing.T) {
	_, err := ParseBzImage([]byte("short"))
	assert.ErrorContains(t, err, "too small")
	_, err = ParseBzImage(make([]byte, 8192))
	assert.ErrorContains(t, err, "not a bzImage")
	old := fakeBzImage(4096)
	binary.LittleEndian.PutUint16(old[hdrVersion:], 0x0206)
	_, err = ParseBzImage(old)
	assert.ErrorContains(t, err, "2.12")
	no64 := fakeBzImage(4096)
	no64[hdrXLoadFlags] = 0
	_, err = ParseBzImage(no64)
	assert.ErrorContains(t, err, "64-bit")
}

// TestLoadRefusesWhatDoesNotFit proves an oversized command line and an
// initrd that would overlap the kernel are refused.
func TestLoadRefusesWhatDoesNotFit(t *testing.T) {
	k, err := ParseBzImage(fakeBzImage(4096))
	require.NoError(t, err)
	ram, err := PlaceRAM([]uint64{16 * mib})
	require.NoError(t, err)
	mem := make(memBuf, 16*mib)
	_, err = k.Load(mem, BootSpec{Cmdline: string(make([]byte, 4096)), RAM: ram})
	assert.ErrorContains(t, err, "command line")
	_, err = k.Load(mem, BootSpec{Initrd: make([]byte, 12*mib), RAM: ram})
	assert.ErrorContains(t, err, "initrd")
}
