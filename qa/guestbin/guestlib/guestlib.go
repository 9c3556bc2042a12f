// Package guestlib holds the pure parts of the lab's guest-side programs
// (qa/guestbin/pattern runs in the guest, qa/guestbin/daxpeek in the lab
// host): the deterministic memory pattern, the locate marker, decoding of
// /proc/self/pagemap entries, device-dax mapping windows and hex output.
// Nothing here touches the system, so it is unit-tested on the build host
// and the lab tests use it to compute what the guest must have printed.
package guestlib

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// PageSize is the x86-64 base page size the pattern is laid out in.
const PageSize = 4096

// splitmix64 turns any 64-bit value into a well-mixed one; it seeds the
// per-page xorshift generator so neighbouring pages share no structure.
func splitmix64(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// pageState is the generator state for page index page under seed (never 0).
func pageState(seed, page uint64) uint64 {
	s := splitmix64(seed ^ splitmix64(page))
	if s == 0 {
		s = 0x2545F4914F6CDD1D
	}
	return s
}

// xorshift64 advances a xorshift64 state (Marsaglia 13/7/17).
func xorshift64(s uint64) uint64 {
	s ^= s << 13
	s ^= s >> 7
	s ^= s << 17
	return s
}

// FillPage writes page number page of the pattern keyed by seed into dst
// (len(dst) must be a multiple of 8; normally PageSize): little-endian
// 64-bit words of a xorshift64 stream seeded from (seed, page).
func FillPage(dst []byte, seed, page uint64) {
	s := pageState(seed, page)
	for i := 0; i+8 <= len(dst); i += 8 {
		s = xorshift64(s)
		binary.LittleEndian.PutUint64(dst[i:], s)
	}
}

// CheckPage compares b with page number page of the pattern and returns the
// offset of the first differing byte in b, or -1 if it matches.
func CheckPage(b []byte, seed, page uint64) int {
	s := pageState(seed, page)
	for i := 0; i+8 <= len(b); i += 8 {
		s = xorshift64(s)
		if got := binary.LittleEndian.Uint64(b[i:]); got != s {
			var want [8]byte
			binary.LittleEndian.PutUint64(want[:], s)
			for j := 0; j < 8; j++ {
				if b[i+j] != want[j] {
					return i + j
				}
			}
		}
	}
	return -1
}

// Fill writes the pattern over all of mem (page i of mem is page i of the
// pattern). len(mem) must be a multiple of PageSize.
func Fill(mem []byte, seed uint64) {
	for p := 0; p*PageSize < len(mem); p++ {
		FillPage(mem[p*PageSize:(p+1)*PageSize], seed, uint64(p))
	}
}

// Verify checks all of mem against the pattern. It returns the offset of
// the first bad byte (-1 if none) and the number of bad pages.
func Verify(mem []byte, seed uint64) (firstBad int64, badPages int) {
	firstBad = -1
	for p := 0; p*PageSize < len(mem); p++ {
		if off := CheckPage(mem[p*PageSize:(p+1)*PageSize], seed, uint64(p)); off >= 0 {
			if firstBad < 0 {
				firstBad = int64(p*PageSize + off)
			}
			badPages++
		}
	}
	return firstBad, badPages
}

// MarkerMagic starts every locate page; the rest of the 32-byte marker is
// the seed and 16 bytes of the pattern, so a marker names its run.
const MarkerMagic = "PMVMLOC1"

// MarkerLen is how many bytes of a locate page the guest prints and the lab
// host reads back.
const MarkerLen = 32

// LocatePage returns the unique 4 KiB page `pattern locate --seed seed`
// writes: MarkerMagic, the seed (little-endian), then the pattern of page
// index ^0 under seed for the remaining bytes.
func LocatePage(seed uint64) []byte {
	p := make([]byte, PageSize)
	FillPage(p, seed, ^uint64(0))
	copy(p, MarkerMagic)
	binary.LittleEndian.PutUint64(p[8:], seed)
	return p
}

// Marker returns the first MarkerLen bytes of LocatePage(seed).
func Marker(seed uint64) []byte { return LocatePage(seed)[:MarkerLen] }

// Pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	PagemapPresent    = 1 << 63
	PagemapSwapped    = 1 << 62
	PagemapFileShared = 1 << 61
	PagemapExclusive  = 1 << 56
	PagemapSoftDirty  = 1 << 55
	PagemapPFNMask    = 1<<55 - 1 // bits 0-54
)

// PagemapOffset is the offset in /proc/<pid>/pagemap of the entry for the
// page holding virtual address vaddr.
func PagemapOffset(vaddr uint64) int64 { return int64(vaddr/PageSize) * 8 }

// ErrNoPFN: the page is present but the kernel hid its PFN (reading
// pagemap without CAP_SYS_ADMIN gives PFN 0).
var ErrNoPFN = errors.New("pagemap: page present but PFN reads as 0 (needs CAP_SYS_ADMIN: run as root)")

// PhysAddr decodes a pagemap entry (8 little-endian bytes as read from the
// file) for virtual address vaddr and returns the physical address of
// vaddr: PFN*4096 + vaddr%4096.
func PhysAddr(entry uint64, vaddr uint64) (uint64, error) {
	switch {
	case entry&PagemapPresent == 0 && entry&PagemapSwapped != 0:
		return 0, fmt.Errorf("pagemap: page of %#x is swapped out (entry %#016x)", vaddr, entry)
	case entry&PagemapPresent == 0:
		return 0, fmt.Errorf("pagemap: page of %#x is not present (entry %#016x); touch and mlock it first", vaddr, entry)
	case entry&PagemapPFNMask == 0:
		return 0, ErrNoPFN
	}
	return (entry&PagemapPFNMask)*PageSize + vaddr%PageSize, nil
}

// DaxWindow computes the mmap window for reading [off, off+length) of a
// device-dax device whose mappings must be align-aligned in both offset
// and length: mapOff is off rounded down to align, mapLen covers the end
// rounded up to align, and inner is where off lies inside the mapping.
func DaxWindow(off, length, align uint64) (mapOff, mapLen, inner uint64, err error) {
	if align == 0 || align&(align-1) != 0 {
		return 0, 0, 0, fmt.Errorf("dax align %d is not a power of two", align)
	}
	if length == 0 {
		return 0, 0, 0, errors.New("length is 0")
	}
	end := off + length
	if end < off {
		return 0, 0, 0, errors.New("offset+length overflows")
	}
	mapOff = off &^ (align - 1)
	mapEnd := (end + align - 1) &^ (align - 1)
	if mapEnd < end {
		return 0, 0, 0, errors.New("offset+length overflows when aligned")
	}
	return mapOff, mapEnd - mapOff, off - mapOff, nil
}

// Hex is lower-case hex without separators (the form every PMVM- line uses).
func Hex(b []byte) string { return hex.EncodeToString(b) }

// ParseHex is the inverse of Hex.
func ParseHex(s string) ([]byte, error) { return hex.DecodeString(strings.TrimSpace(s)) }

// ParseUint parses a decimal or 0x-prefixed hexadecimal number.
func ParseUint(s string) (uint64, error) { return strconv.ParseUint(strings.TrimSpace(s), 0, 64) }

// MemTotal returns MemTotal from /proc/meminfo contents, in bytes.
func MemTotal(meminfo []byte) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("meminfo: MemTotal %q: %w", f[1], err)
			}
			if len(f) >= 3 && f[2] != "kB" {
				return 0, fmt.Errorf("meminfo: MemTotal unit %q, want kB", f[2])
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("meminfo: no MemTotal line")
}

// FillSize is the part of memTotal that `pattern fill --percent p` takes,
// rounded down to whole pages.
func FillSize(memTotal uint64, percent int) uint64 {
	return memTotal / 100 * uint64(percent) / PageSize * PageSize
}
