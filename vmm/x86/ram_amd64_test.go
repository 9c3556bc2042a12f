package x86

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/vmm/x86/bzimage"
)

const kib = 1 << 10
const mib = 1 << 20
const gib = 1 << 30

// at2M gives each size the 2 MiB alignment pmem gives anonymous, memfd,
// tmpfs and plain file backings.
func at2M(sizes ...uint64) []RAMBlock {
	out := make([]RAMBlock, len(sizes))
	for i, s := range sizes {
		out[i] = RAMBlock{Name: fmt.Sprintf("ram%d", i), Size: s, Align: 2 * mib}
	}
	return out
}

// TestPlaceRAMSkipsTheMMIOGap proves RAM never overlaps the 3-4 GiB window
// and that a block crossing it is split into two slots, continuing at 4 GiB.
func TestPlaceRAMSkipsTheMMIOGap(t *testing.T) {
	got, err := PlaceRAM(at2M(2*gib, 2*gib))
	require.NoError(t, err)
	assert.Equal(t, []RAMRange{
		{Block: 0, GuestPhys: 0, BlockOffset: 0, Size: 2 * gib},
		{Block: 1, GuestPhys: 2 * gib, BlockOffset: 0, Size: 1 * gib},
		{Block: 1, GuestPhys: 4 * gib, BlockOffset: 1 * gib, Size: 1 * gib},
	}, got)
}

// TestPlaceRAMIsDeterministic proves the layout only depends on sizes and
// alignments: the same blocks give the same layout every time.
func TestPlaceRAMIsDeterministic(t *testing.T) {
	a, err := PlaceRAM(at2M(512*mib, 256*mib))
	require.NoError(t, err)
	b, err := PlaceRAM(at2M(512*mib, 256*mib))
	require.NoError(t, err)
	assert.Equal(t, a, b)
	assert.Equal(t, uint64(512*mib), a[1].GuestPhys)

	mixed := []RAMBlock{{"a", 512 * mib, 2 * mib}, {"b", 2*gib + 4*kib, 4 * kib}, {"c", 3 * gib, gib}, {"d", 6 * mib, 2 * mib}}
	first, err := PlaceRAM(mixed)
	require.NoError(t, err)
	for i := 0; i < 20; i++ {
		again, err := PlaceRAM(append([]RAMBlock(nil), mixed...))
		require.NoError(t, err)
		require.Equal(t, first, again)
	}
}

// packedLayout is the layout of pmvm before blocks were aligned: back to
// back from 0 by size, skipping the MMIO gap. State files record it.
func packedLayout(sizes ...uint64) []RAMRange {
	var out []RAMRange
	next := uint64(0)
	for i, size := range sizes {
		for off := uint64(0); off < size; {
			if next >= MMIOGapStart && next < MMIOGapEnd {
				next = MMIOGapEnd
			}
			n := size - off
			if next < MMIOGapStart && next+n > MMIOGapStart {
				n = MMIOGapStart - next
			}
			out = append(out, RAMRange{Block: i, GuestPhys: next, BlockOffset: off, Size: n})
			next, off = next+n, off+n
		}
	}
	return out
}

// TestPlaceRAMKeepsThePackedLayoutAt2MiB proves that when every block has
// the default 2 MiB alignment (every backing but 1 GiB hugetlbfs and
// device-dax), the layout is the one earlier versions saved in state files,
// so those guests still resume.
func TestPlaceRAMKeepsThePackedLayoutAt2MiB(t *testing.T) {
	for _, sizes := range [][]uint64{{512 * mib}, {2 * gib, 2 * gib}, {64 * mib, 2 * mib, 4 * gib}, {18 * mib, 3*gib - 2*mib, 6 * mib, gib}} {
		got, err := PlaceRAM(at2M(sizes...))
		require.NoError(t, err)
		assert.Equal(t, packedLayout(sizes...), got, "sizes %v", sizes)
	}
}

// TestPlaceRAMAlignsEachBlock proves, for blocks with 4 KiB, 2 MiB and
// 1 GiB alignments in every order, that every slot's guest-physical
// address, offset in its block and size are multiples of the block's
// alignment (so GPA and HVA agree modulo the page size and KVM can use
// pages that large), that the slots cover each block once without
// overlapping each other or the MMIO gap, that a block starts at the first
// aligned address after the previous one (past the gap if it is in it),
// and that the e820 map matches the slots exactly.
func TestPlaceRAMAlignsEachBlock(t *testing.T) {
	pool := []RAMBlock{
		{"page", 16*mib + 4*kib, 4 * kib},
		{"small", 514 * mib, 2 * mib},
		{"huge", 2 * gib, gib},
		{"odd", 12 * kib, 4 * kib},
		{"thp", 1536 * mib, 2 * mib},
	}
	n := 0
	permute(len(pool), func(order []int) {
		blocks := make([]RAMBlock, len(order))
		for i, j := range order {
			blocks[i] = pool[j]
		}
		if blocks[0].Size < MinFirstBlock {
			_, err := PlaceRAM(blocks)
			assert.ErrorContains(t, err, "at least 16 MiB")
			return
		}
		n++
		ram, err := PlaceRAM(blocks)
		require.NoError(t, err, "order %v", order)
		checkLayout(t, blocks, ram)
	})
	assert.Equal(t, 96, n, "every order with a big enough first block was placed")
}

// permute calls f with every permutation of 0..n-1.
func permute(n int, f func([]int)) {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	var rec func(k int)
	rec = func(k int) {
		if k == n {
			f(append([]int(nil), p...))
			return
		}
		for i := k; i < n; i++ {
			p[k], p[i] = p[i], p[k]
			rec(k + 1)
			p[k], p[i] = p[i], p[k]
		}
	}
	rec(0)
}

// checkLayout asserts every property PlaceRAM promises of ram for blocks.
func checkLayout(t *testing.T, blocks []RAMBlock, ram []RAMRange) {
	t.Helper()
	names := func() string {
		s := ""
		for _, b := range blocks {
			s += b.Name + " "
		}
		return s
	}()
	require.NotEmpty(t, ram)
	assert.Zero(t, ram[0].GuestPhys, "%s: the first block starts at 0", names)
	assert.Zero(t, ram[0].Block)
	covered := make([]uint64, len(blocks))
	prevEnd := uint64(0)
	for i, r := range ram {
		b := blocks[r.Block]
		assert.Zero(t, r.GuestPhys%b.Align, "%s: slot %d of %q at %#x is %s aligned", names, i, b.Name, r.GuestPhys, memspec.FormatSize(b.Align))
		assert.Zero(t, r.BlockOffset%b.Align, "%s: slot %d offset %#x", names, i, r.BlockOffset)
		assert.Zero(t, r.Size%b.Align, "%s: slot %d size %#x", names, i, r.Size)
		assert.NotZero(t, r.Size)
		assert.Equal(t, covered[r.Block], r.BlockOffset, "%s: slot %d continues block %q where the last slot ended", names, i, b.Name)
		covered[r.Block] += r.Size
		if i > 0 {
			assert.GreaterOrEqual(t, r.GuestPhys, prevEnd, "%s: slot %d does not overlap slot %d", names, i, i-1)
			assert.GreaterOrEqual(t, r.Block, ram[i-1].Block, "blocks in config order")
			if r.Block == ram[i-1].Block {
				assert.Equal(t, uint64(MMIOGapStart), prevEnd, "a block is only split at the gap")
				assert.Equal(t, uint64(MMIOGapEnd), r.GuestPhys, "and continues at 4 GiB")
			} else {
				// Tight: the block starts at the first aligned address
				// after the previous block, or past the gap.
				// A block aligned to more than the gap's size is never
				// split: it starts past the gap.
				want := (prevEnd + b.Align - 1) &^ (b.Align - 1)
				if want < MMIOGapStart && want+b.Size > MMIOGapStart && (MMIOGapEnd-MMIOGapStart)%b.Align != 0 {
					want = MMIOGapEnd
				}
				if want >= MMIOGapStart && want < MMIOGapEnd {
					want = MMIOGapEnd
				}
				want = (want + b.Align - 1) &^ (b.Align - 1)
				assert.Equal(t, want, r.GuestPhys, "%s: block %q starts at the first aligned address", names, b.Name)
			}
		}
		assert.True(t, r.End() <= MMIOGapStart || r.GuestPhys >= MMIOGapEnd, "%s: slot %d %#x-%#x stays out of the MMIO gap", names, i, r.GuestPhys, r.End())
		prevEnd = r.End()
	}
	for i, b := range blocks {
		assert.Equal(t, b.Size, covered[i], "%s: block %q placed whole", names, b.Name)
	}
	checkE820(t, ram)
}

// checkE820 asserts that the e820 map tiles every slot exactly (each entry
// inside one slot, the entries of a slot contiguous from its start to its
// end) and declares nothing else: no entry for the holes between blocks.
func checkE820(t *testing.T, ram []RAMRange) {
	t.Helper()
	e820, err := E820(ram)
	require.NoError(t, err)
	next := 0
	for i, r := range ram {
		at := r.GuestPhys
		for next < len(e820) && e820[next].Addr < r.End() {
			e := e820[next]
			require.Equal(t, at, e.Addr, "slot %d: entry %d starts where the last one ended", i, next)
			require.LessOrEqual(t, e.Addr+e.Size, r.End(), "slot %d: entry %d stays inside the slot", i, next)
			if e.Type == E820Reserved {
				require.Zero(t, i, "only the first slot has reserved low regions")
			}
			at += e.Size
			next++
		}
		require.Equal(t, r.End(), at, "slot %d %#x-%#x is covered by e820 entries exactly", i, r.GuestPhys, r.End())
	}
	require.Equal(t, len(e820), next, "no e820 entry lies outside the slots")
}

// TestPlaceRAMLayouts pins the layouts the alignment rule gives: a 1 GiB
// block after 512 MiB starts at 1 GiB (not 512 MiB); a block that would
// start in the gap starts at 4 GiB; a 1 GiB-aligned block crossing the gap
// is split on 1 GiB boundaries; a 2 GiB-aligned block is never split.
func TestPlaceRAMLayouts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		blocks []RAMBlock
		want   []RAMRange
	}{
		{"1GiB after 512MiB", []RAMBlock{{"a", 512 * mib, 2 * mib}, {"b", gib, gib}, {"c", 8 * kib, 4 * kib}}, []RAMRange{
			{Block: 0, GuestPhys: 0, Size: 512 * mib},
			{Block: 1, GuestPhys: gib, Size: gib},
			{Block: 2, GuestPhys: 2 * gib, Size: 8 * kib},
		}},
		{"4KiB then 2MiB then 1GiB", []RAMBlock{{"a", 16*mib + 4*kib, 4 * kib}, {"b", 2 * mib, 2 * mib}, {"c", gib, gib}}, []RAMRange{
			{Block: 0, GuestPhys: 0, Size: 16*mib + 4*kib},
			{Block: 1, GuestPhys: 18 * mib, Size: 2 * mib},
			{Block: 2, GuestPhys: gib, Size: gib},
		}},
		{"aligned start falls in the gap", []RAMBlock{{"a", 2*gib + 512*mib, 2 * mib}, {"b", gib, gib}}, []RAMRange{
			{Block: 0, GuestPhys: 0, Size: 2*gib + 512*mib},
			{Block: 1, GuestPhys: 4 * gib, Size: gib},
		}},
		{"1GiB block split at the gap", []RAMBlock{{"a", 512 * mib, 2 * mib}, {"b", 3 * gib, gib}}, []RAMRange{
			{Block: 0, GuestPhys: 0, Size: 512 * mib},
			{Block: 1, GuestPhys: gib, Size: 2 * gib},
			{Block: 1, GuestPhys: 4 * gib, BlockOffset: 2 * gib, Size: gib},
		}},
		{"2GiB-aligned block moves past the gap whole", []RAMBlock{{"a", 512 * mib, 2 * mib}, {"b", 4 * gib, 2 * gib}}, []RAMRange{
			{Block: 0, GuestPhys: 0, Size: 512 * mib},
			{Block: 1, GuestPhys: 4 * gib, Size: 4 * gib},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PlaceRAM(tc.blocks)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			checkLayout(t, tc.blocks, got)
		})
	}
}

// TestPlaceRAMRefusals proves the layout refuses what cannot boot or cannot
// be placed, saying what to change.
func TestPlaceRAMRefusals(t *testing.T) {
	_, err := PlaceRAM(nil)
	assert.Error(t, err)
	_, err = PlaceRAM(at2M(8 * mib))
	assert.ErrorContains(t, err, "at least 16 MiB")
	_, err = PlaceRAM(at2M(64*mib, 0))
	assert.ErrorContains(t, err, `memory block "ram1" has size 0`)
	_, err = PlaceRAM([]RAMBlock{{"ram0", 64 * mib, 2 * mib}, {"big", 1536 * mib, gib}})
	assert.ErrorContains(t, err, `memory block "big": size 1536MiB is not a multiple of its backing's alignment 1GiB; make size a multiple of 1GiB`)
	for _, align := range []uint64{0, 2 * kib, 3 * mib} {
		_, err = PlaceRAM([]RAMBlock{{"ram0", 64 * mib, align}})
		assert.ErrorContains(t, err, "is not a power of two of at least 4KiB", "align %d", align)
	}
	_, err = PlaceRAM([]RAMBlock{{"ram0", 4 * gib, 2 * gib}})
	assert.ErrorContains(t, err, `the first memory block "ram0" (4GiB, aligned to 2GiB) cannot start at guest-physical 0`)
	_, err = PlaceRAM([]RAMBlock{{"ram0", 64 * mib, 2 * mib}, {"top", 1 << 62, 1 << 62}, {"more", 1 << 63, 2 * mib}})
	assert.ErrorContains(t, err, `memory block "more"`)
}

// TestE820MatchesSlots proves every byte of every RAM range appears in the
// e820 map exactly once, and nothing else does.
func TestE820MatchesSlots(t *testing.T) {
	for _, sizes := range [][]uint64{{512 * mib}, {2 * gib, 2 * gib}, {64 * mib, 2 * mib, 4 * gib}} {
		ram, err := PlaceRAM(at2M(sizes...))
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
		checkE820(t, ram)
	}
}

// fakeBzImage builds the smallest image with a valid 2.15 setup header.
func fakeBzImage(pmSize int) []byte {
	img := make([]byte, 5*512+pmSize)
	img[bzimage.OffSetupSects] = 4
	img[bzimage.OffJump] = 0x6a // header ends at 0x26c
	copy(img[bzimage.OffMagic:], "HdrS")
	binary.LittleEndian.PutUint16(img[bzimage.OffVersion:], 0x020f)
	img[bzimage.OffLoadFlags] = bzimage.LoadFlagLoadedHigh
	img[bzimage.OffXLoadFlags] = bzimage.XLFKernel64
	binary.LittleEndian.PutUint32(img[bzimage.OffInitrdMax:], 0x7fffffff)
	binary.LittleEndian.PutUint32(img[bzimage.OffCmdlineSize:], 2047)
	binary.LittleEndian.PutUint32(img[bzimage.OffInitSize:], 8*mib)
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
	ram, err := PlaceRAM(at2M(64 * mib))
	require.NoError(t, err)
	mem := make(memBuf, 64*mib)
	initrd := []byte("initrd-bytes")
	b, err := k.Load(mem, BootSpec{Cmdline: "console=ttyS0", Initrd: initrd, RAM: ram, RSDPAddr: 0xe0000})
	require.NoError(t, err)

	assert.Equal(t, uint64(HighMemStart+0x200), b.Entry)
	assert.Equal(t, byte(0xcc), mem[HighMemStart])
	assert.Equal(t, "console=ttyS0\x00", string(mem[CmdlineAddr:CmdlineAddr+14]))
	zp := mem[ZeroPageAddr : ZeroPageAddr+zeroPageSize]
	assert.Equal(t, "HdrS", string(zp[bzimage.OffMagic:bzimage.OffMagic+4]))
	assert.Equal(t, uint32(CmdlineAddr), binary.LittleEndian.Uint32(zp[bzimage.OffCmdLinePtr:]))
	assert.Equal(t, byte(0xff), zp[bzimage.OffTypeOfLoader])
	assert.Equal(t, uint64(0xe0000), binary.LittleEndian.Uint64(zp[zpACPIRSDPAddr:]))
	rdAddr := binary.LittleEndian.Uint32(zp[bzimage.OffRamdiskImage:])
	assert.Equal(t, uint32(len(initrd)), binary.LittleEndian.Uint32(zp[bzimage.OffRamdiskSize:]))
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
	binary.LittleEndian.PutUint16(old[bzimage.OffVersion:], 0x0206)
	_, err = ParseBzImage(old)
	assert.ErrorContains(t, err, "2.12")
	no64 := fakeBzImage(4096)
	no64[bzimage.OffXLoadFlags] = 0
	_, err = ParseBzImage(no64)
	assert.ErrorContains(t, err, "64-bit")
}

// TestLoadRefusesWhatDoesNotFit proves an oversized command line and an
// initrd that would overlap the kernel are refused.
func TestLoadRefusesWhatDoesNotFit(t *testing.T) {
	k, err := ParseBzImage(fakeBzImage(4096))
	require.NoError(t, err)
	ram, err := PlaceRAM(at2M(16 * mib))
	require.NoError(t, err)
	mem := make(memBuf, 16*mib)
	_, err = k.Load(mem, BootSpec{Cmdline: string(make([]byte, 4096)), RAM: ram})
	assert.ErrorContains(t, err, "command line")
	_, err = k.Load(mem, BootSpec{Initrd: make([]byte, 12*mib), RAM: ram})
	assert.ErrorContains(t, err, "initrd")
}
