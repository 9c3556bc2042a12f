package x86

import "fmt"

// RAMRange is one contiguous stretch of guest RAM: part (or all) of one
// configured memory block, which becomes one KVM memory slot.
type RAMRange struct {
	Block       int    // index of the memory block in the config
	GuestPhys   uint64 // first guest-physical address
	BlockOffset uint64 // offset of GuestPhys inside the block's backing
	Size        uint64
}

// End is the first address past the range.
func (r RAMRange) End() uint64 { return r.GuestPhys + r.Size }

// MinFirstBlock is the smallest first memory block: it must hold the low
// structures, the kernel and the initrd.
const MinFirstBlock = 16 << 20

// PlaceRAM lays the memory blocks out from guest-physical 0 in config order.
// RAM never enters the MMIO gap: the part of a block that would continues at
// 4 GiB. The layout depends only on the sizes, so the same config always
// gives the same guest-physical map (resume depends on it).
func PlaceRAM(sizes []uint64) ([]RAMRange, error) {
	if len(sizes) == 0 {
		return nil, fmt.Errorf("no memory blocks")
	}
	if sizes[0] < MinFirstBlock {
		return nil, fmt.Errorf("the first memory block is %d MiB; it holds the kernel and must be at least %d MiB", sizes[0]>>20, MinFirstBlock>>20)
	}
	var out []RAMRange
	next := uint64(0)
	for i, size := range sizes {
		if size == 0 {
			return nil, fmt.Errorf("memory block %d has size 0", i)
		}
		off := uint64(0)
		for off < size {
			if next >= MMIOGapStart && next < MMIOGapEnd {
				next = MMIOGapEnd
			}
			n := size - off
			if next < MMIOGapStart && next+n > MMIOGapStart {
				n = MMIOGapStart - next
			}
			out = append(out, RAMRange{Block: i, GuestPhys: next, BlockOffset: off, Size: n})
			next += n
			off += n
		}
	}
	return out, nil
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
