package guestlib

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPatternDeterministicAndDistinct(t *testing.T) {
	a := make([]byte, PageSize)
	b := make([]byte, PageSize)
	FillPage(a, 7, 3)
	FillPage(b, 7, 3)
	require.Equal(t, a, b, "same seed and page must give the same bytes")
	FillPage(b, 7, 4)
	require.NotEqual(t, a, b, "neighbouring pages must differ")
	FillPage(b, 8, 3)
	require.NotEqual(t, a, b, "another seed must differ")
	require.NotEqual(t, make([]byte, PageSize), a)
	require.Equal(t, -1, CheckPage(a, 7, 3))
	// No page of a fill repeats another (would hide a page mapped twice).
	seen := map[[32]byte]int{}
	mem := make([]byte, 256*PageSize)
	Fill(mem, 42)
	for p := 0; p < 256; p++ {
		s := sha256.Sum256(mem[p*PageSize : (p+1)*PageSize])
		j, dup := seen[s]
		require.False(t, dup, "page %d repeats page %d", p, j)
		seen[s] = p
	}
}

// The pattern is part of the lab's contract (a guest and a host may run
// different builds): pin its first words and a digest.
func TestPatternGolden(t *testing.T) {
	p := make([]byte, PageSize)
	FillPage(p, 7, 0)
	got := hex.EncodeToString(p[:16])
	mem := make([]byte, 16*PageSize)
	Fill(mem, 7)
	require.Equal(t, p, mem[:PageSize])
	sum := sha256.Sum256(mem)
	require.Equal(t, "704daca8f5b44229ea499472637be40c", got)
	require.Equal(t, "391a8279bb659b2eac29629a379300030afd38c0147182c87596ec4f2f1f7de8", hex.EncodeToString(sum[:]))
	// Recompute the first word by hand from the documented construction.
	s := splitmix64(7 ^ splitmix64(0))
	s ^= s << 13
	s ^= s >> 7
	s ^= s << 17
	require.Equal(t, s, binary.LittleEndian.Uint64(p))
}

func TestVerifyFindsFirstBadByte(t *testing.T) {
	mem := make([]byte, 8*PageSize)
	Fill(mem, 99)
	off, pages := Verify(mem, 99)
	require.EqualValues(t, -1, off)
	require.Zero(t, pages)

	mem[5*PageSize+123] ^= 0x10
	mem[6*PageSize+7] ^= 0x01
	mem[6*PageSize+4000] ^= 0x01
	off, pages = Verify(mem, 99)
	require.EqualValues(t, 5*PageSize+123, off)
	require.Equal(t, 2, pages)

	// A page holding another page's contents (a mis-mapped page) is caught.
	Fill(mem, 99)
	copy(mem[2*PageSize:3*PageSize], mem[1*PageSize:2*PageSize])
	off, pages = Verify(mem, 99)
	require.EqualValues(t, 2*PageSize, off)
	require.Equal(t, 1, pages)

	// Wrong seed: everything bad.
	Fill(mem, 99)
	_, pages = Verify(mem, 98)
	require.Equal(t, 8, pages)
}

func TestLocateMarker(t *testing.T) {
	m := Marker(0x1234)
	require.Len(t, m, MarkerLen)
	require.True(t, bytes.HasPrefix(m, []byte(MarkerMagic)))
	require.EqualValues(t, 0x1234, binary.LittleEndian.Uint64(m[8:16]))
	require.NotEqual(t, Marker(0x1234), Marker(0x1235))
	require.Equal(t, Marker(5), Marker(5))
	require.NotEqual(t, make([]byte, 16), m[16:])
	page := LocatePage(0x1234)
	require.Len(t, page, PageSize)
	require.Equal(t, m, page[:MarkerLen])
}

func TestPhysAddr(t *testing.T) {
	// present, exclusive, soft-dirty, PFN 0x1234
	e := uint64(PagemapPresent|PagemapExclusive|PagemapSoftDirty) | 0x1234
	gpa, err := PhysAddr(e, 0x7f00_1234_5abc)
	require.NoError(t, err)
	require.EqualValues(t, 0x1234abc, gpa)

	// Flag bits 55-63 never leak into the address.
	gpa, err = PhysAddr(PagemapPresent|PagemapFileShared|PagemapExclusive|PagemapSoftDirty|1<<40, 0x1008)
	require.NoError(t, err)
	require.EqualValues(t, uint64(1)<<52|8, gpa)

	_, err = PhysAddr(0, 0x1000)
	require.ErrorContains(t, err, "not present")
	_, err = PhysAddr(PagemapSwapped|0x55, 0x1000)
	require.ErrorContains(t, err, "swapped")
	_, err = PhysAddr(PagemapPresent, 0x1000)
	require.ErrorIs(t, err, ErrNoPFN)

	require.EqualValues(t, 0, PagemapOffset(0xfff))
	require.EqualValues(t, 8, PagemapOffset(0x1000))
	require.EqualValues(t, 0x7f0012345*8, PagemapOffset(0x7f00_1234_5abc))
}

func TestDaxWindow(t *testing.T) {
	const M2 = 2 << 20
	for _, c := range []struct {
		off, n, align         uint64
		mapOff, mapLen, inner uint64
	}{
		{0, 32, M2, 0, M2, 0},
		{0x1234abc, 32, M2, 0x1200000, M2, 0x34abc},
		{M2 - 16, 32, M2, 0, 2 * M2, M2 - 16}, // straddles a boundary
		{M2, M2, M2, M2, M2, 0},
		{0x40001000, 4096, 1 << 30, 0x40000000, 1 << 30, 0x1000},
	} {
		mo, ml, in, err := DaxWindow(c.off, c.n, c.align)
		require.NoError(t, err)
		require.Equal(t, [3]uint64{c.mapOff, c.mapLen, c.inner}, [3]uint64{mo, ml, in}, "%+v", c)
		require.Zero(t, mo%c.align)
		require.Zero(t, ml%c.align)
		require.GreaterOrEqual(t, mo+ml, c.off+c.n)
	}
	_, _, _, err := DaxWindow(0, 32, 3<<20)
	require.ErrorContains(t, err, "power of two")
	_, _, _, err = DaxWindow(0, 0, M2)
	require.Error(t, err)
	_, _, _, err = DaxWindow(^uint64(0)-10, 32, M2)
	require.Error(t, err)
}

func TestHexAndNumbers(t *testing.T) {
	b := []byte{0x00, 0x01, 0xab, 0xff}
	require.Equal(t, "0001abff", Hex(b))
	back, err := ParseHex(" 0001abff\n")
	require.NoError(t, err)
	require.Equal(t, b, back)
	_, err = ParseHex("0g")
	require.Error(t, err)
	for s, want := range map[string]uint64{"0x1000": 4096, "4096": 4096, "0X10": 16, " 32 ": 32} {
		got, err := ParseUint(s)
		require.NoError(t, err, s)
		require.Equal(t, want, got, s)
	}
}

func TestMemTotal(t *testing.T) {
	mi := "MemTotal:         232104 kB\nMemFree:          180000 kB\n"
	n, err := MemTotal([]byte(mi))
	require.NoError(t, err)
	require.EqualValues(t, 232104*1024, n)
	_, err = MemTotal([]byte("MemFree: 1 kB\n"))
	require.Error(t, err)
	_, err = MemTotal([]byte(strings.Replace(mi, "kB", "MB", 1)))
	require.Error(t, err)
	require.EqualValues(t, 0, FillSize(232104*1024, 50)%PageSize)
	require.InDelta(t, 232104*1024/2, FillSize(232104*1024, 50), PageSize*2)
}
