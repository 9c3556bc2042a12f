package x86

import (
	"fmt"
	"strconv"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// RAMRange is one contiguous stretch of guest RAM: part (or all) of one
// configured memory block, which becomes one KVM memory slot. It is recorded
// as is in the state file (machine record): do not add fields.
type RAMRange struct {
	Block       int    // index of the memory block in the config
	GuestPhys   uint64 // first guest-physical address
	BlockOffset uint64 // offset of GuestPhys inside the block's backing
	Size        uint64
}

// End is the first address past the range.
func (r RAMRange) End() uint64 { return r.GuestPhys + r.Size }

// RAMBlock is what PlaceRAM needs to know of one configured memory block.
type RAMBlock struct {
	Name string // for messages ("ram0")
	Size uint64
	// Align is the alignment of the block's host mapping: the backing's page
	// size (hugetlbfs), its dax alignment (device-dax), or pmem.DefaultAlign
	// (2 MiB) for everything else. A power of two, at least MinRAMAlign, and
	// Size is a multiple of it.
	Align uint64
}

// MinRAMAlign is the least alignment PlaceRAM accepts: the base page.
const MinRAMAlign = 4 << 10

// MinFirstBlock is the smallest first memory block: it must hold the low
// structures, the kernel and the initrd.
const MinFirstBlock = 16 << 20

// PlaceRAM lays the memory blocks out from guest-physical 0 in config order.
//
// Each block starts at the next guest-physical address that is a multiple of
// its Align, the alignment of its host mapping. KVM maps guest memory with a
// large page only where the guest-physical and the host-virtual address
// agree modulo the page size; since pmem aligns every host mapping to its
// backing's Align, aligning the guest-physical address to the same Align
// makes every huge page of the backing (2 MiB, or 1 GiB for a 1 GiB
// hugetlbfs or device-dax) mappable as one. The padding this leaves between
// blocks is a hole in guest-physical space only: it costs no host memory,
// gets no memory slot and no e820 entry. Listing the blocks from the largest
// alignment down leaves no holes.
//
// RAM never enters the MMIO gap: the part of a block that would is split off
// and continues at 4 GiB, which keeps guest-physical and host-virtual
// addresses congruent for every alignment up to the gap's size (1 GiB). A
// block with a larger alignment is never split: it starts past the gap
// instead. Every range's GuestPhys, BlockOffset and Size are multiples of
// its block's Align.
//
// The layout depends only on the sizes and alignments, so the same config on
// the same backings always gives the same guest-physical map (resume checks
// the saved map against it). With every alignment at 2 MiB (sizes being
// multiples of 2 MiB) it is the back-to-back layout of earlier versions.
func PlaceRAM(blocks []RAMBlock) ([]RAMRange, error) {
	if len(blocks) == 0 {
		return nil, fmt.Errorf("no memory blocks")
	}
	for i, b := range blocks {
		name := blockName(blocks, i)
		switch {
		case b.Size == 0:
			return nil, fmt.Errorf("memory block %s has size 0", name)
		case b.Align < MinRAMAlign || b.Align&(b.Align-1) != 0:
			return nil, fmt.Errorf("memory block %s: its backing's alignment %d is not a power of two of at least %s; pmvm cannot place it", name, b.Align, memspec.FormatSize(MinRAMAlign))
		case b.Size%b.Align != 0:
			return nil, fmt.Errorf("memory block %s: size %s is not a multiple of its backing's alignment %s; make size a multiple of %s",
				name, memspec.FormatSize(b.Size), memspec.FormatSize(b.Align), memspec.FormatSize(b.Align))
		}
	}
	if blocks[0].Size < MinFirstBlock {
		return nil, fmt.Errorf("the first memory block is %d MiB; it holds the kernel and must be at least %d MiB", blocks[0].Size>>20, MinFirstBlock>>20)
	}
	var out []RAMRange
	next := uint64(0)
	for i, b := range blocks {
		var err error
		if next, err = alignUp(next, b.Align); err != nil {
			return nil, placeErr(blocks, i)
		}
		// Splitting at the gap keeps GPA and HVA congruent only when the
		// gap's end is as aligned as its start; else move past the gap.
		if next < MMIOGapStart && next+b.Size > MMIOGapStart && (MMIOGapEnd-MMIOGapStart)%b.Align != 0 {
			next = MMIOGapEnd
		}
		if next >= MMIOGapStart && next < MMIOGapEnd {
			next = MMIOGapEnd
		}
		if next, err = alignUp(next, b.Align); err != nil {
			return nil, placeErr(blocks, i)
		}
		if i == 0 && next != 0 {
			return nil, fmt.Errorf("the first memory block %s (%s, aligned to %s) cannot start at guest-physical 0 around the MMIO gap at 3-4 GiB; make it at most 3 GiB, or list a block with an alignment of at most 1 GiB first",
				blockName(blocks, 0), memspec.FormatSize(b.Size), memspec.FormatSize(b.Align))
		}
		off := uint64(0)
		for off < b.Size {
			if next >= MMIOGapStart && next < MMIOGapEnd {
				next = MMIOGapEnd
			}
			n := b.Size - off
			if next < MMIOGapStart && next+n > MMIOGapStart {
				n = MMIOGapStart - next
			}
			if next+n < next {
				return nil, placeErr(blocks, i)
			}
			out = append(out, RAMRange{Block: i, GuestPhys: next, BlockOffset: off, Size: n})
			next += n
			off += n
		}
	}
	return out, nil
}

func alignUp(x, align uint64) (uint64, error) {
	y := (x + align - 1) &^ (align - 1)
	if y < x {
		return 0, fmt.Errorf("overflow")
	}
	return y, nil
}

func placeErr(blocks []RAMBlock, i int) error {
	return fmt.Errorf("memory block %s (%s, aligned to %s) does not fit below the top of the 64-bit guest-physical space; make the blocks smaller", blockName(blocks, i), memspec.FormatSize(blocks[i].Size), memspec.FormatSize(blocks[i].Align))
}

// blockName names block i for messages: its name if it has one, else its index.
func blockName(blocks []RAMBlock, i int) string {
	if blocks[i].Name != "" {
		return strconv.Quote(blocks[i].Name)
	}
	return strconv.Itoa(i)
}

// E820 entry types.
const (
	E820RAM      = 1
	E820Reserved = 2
)

// E820Entry is one entry of the BIOS memory map handed to Linux.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// E820 builds the memory map from the RAM ranges. Every byte of every range
// appears exactly once: as RAM, or as reserved for the PC's low regions
// (EBDA, VGA/ROM window, the ACPI tables). Nothing outside the ranges is
// declared and no entry spans two slots, so the map matches the memory
// slots exactly.
func E820(ram []RAMRange) ([]E820Entry, error) {
	if len(ram) == 0 || ram[0].GuestPhys != 0 || ram[0].Size < MinFirstBlock {
		return nil, fmt.Errorf("the first RAM range must start at 0 and hold at least %d MiB", MinFirstBlock>>20)
	}
	var out []E820Entry
	add := func(addr, size uint64, typ uint32) {
		if size == 0 {
			return
		}
		out = append(out, E820Entry{Addr: addr, Size: size, Type: typ})
	}
	add(0, EBDAStart, E820RAM)
	add(EBDAStart, HighMemStart-EBDAStart, E820Reserved)
	add(HighMemStart, ram[0].Size-HighMemStart, E820RAM)
	for _, r := range ram[1:] {
		add(r.GuestPhys, r.Size, E820RAM)
	}
	if len(out) > maxE820Entries {
		return nil, fmt.Errorf("memory layout needs %d e820 entries, the zero page holds %d", len(out), maxE820Entries)
	}
	return out, nil
}

// LowRAMEnd is the end of RAM below the MMIO gap (where an initrd may go).
func LowRAMEnd(ram []RAMRange) uint64 {
	end := uint64(0)
	for _, r := range ram {
		if r.GuestPhys < MMIOGapStart && r.End() > end && r.GuestPhys == end {
			end = r.End()
		}
	}
	return end
}
