package vmm

import (
	"fmt"
	"strings"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/vmm/x86"
)

// placeRAM lays out the config's memory blocks in guest-physical space.
// aligns[i] is the alignment pmem gives block i's host mapping (from its
// probe: the huge page size, the device-dax alignment, or 2 MiB); the block
// gets the same guest-physical alignment so KVM can map it with pages that
// large. New and CheckIncoming both call it, so a resume compares the saved
// layout with exactly the one New will build.
func placeRAM(cfg *configs.VM, aligns []uint64) ([]x86.RAMRange, error) {
	if len(aligns) != len(cfg.Memory) {
		return nil, fmt.Errorf("memory layout: %d alignments for %d memory blocks", len(aligns), len(cfg.Memory))
	}
	blocks := make([]x86.RAMBlock, len(cfg.Memory))
	for i, b := range cfg.Memory {
		blocks[i] = x86.RAMBlock{Name: b.Name, Size: b.Size.Bytes(), Align: aligns[i]}
	}
	ram, err := x86.PlaceRAM(blocks)
	if err != nil {
		return nil, fmt.Errorf("memory layout: %w", err)
	}
	return ram, nil
}

// ramLayoutDiff explains how the layout built now differs from the saved
// one, range by range (one range per memory slot). Empty means the same.
func ramLayoutDiff(cfg *configs.VM, saved, now []x86.RAMRange) []string {
	name := func(r x86.RAMRange) string {
		if r.Block >= 0 && r.Block < len(cfg.Memory) {
			return fmt.Sprintf("block %q", cfg.Memory[r.Block].Name)
		}
		return fmt.Sprintf("block %d", r.Block)
	}
	show := func(r x86.RAMRange) string {
		return fmt.Sprintf("%s bytes %#x-%#x at guest-physical %#x-%#x", name(r), r.BlockOffset, r.BlockOffset+r.Size, r.GuestPhys, r.End())
	}
	var d []string
	for i := 0; i < max(len(saved), len(now)); i++ {
		switch {
		case i >= len(now):
			d = append(d, fmt.Sprintf("slot %d: saved %s, now no such slot", i, show(saved[i])))
		case i >= len(saved):
			d = append(d, fmt.Sprintf("slot %d: saved no such slot, now %s", i, show(now[i])))
		case saved[i] != now[i]:
			d = append(d, fmt.Sprintf("slot %d: saved %s, now %s", i, show(saved[i]), show(now[i])))
		}
	}
	return d
}

// layoutRefusal is the reason a guest saved with another RAM layout cannot
// resume: its kernel's page tables and memory map hold the old addresses.
func layoutRefusal(diff []string) string {
	return "the guest-physical RAM layout this pmvm builds for the config differs from the one the guest was saved with " +
		"(blocks are placed at their backings' alignment: huge page size, device-dax alignment, else 2 MiB):\n  " +
		strings.Join(diff, "\n  ") +
		"\nthe guest's kernel holds the saved addresses: resume it with the pmvm version that saved it and shut it down there (or discard this state file); this pmvm then boots it afresh"
}

// GuestMemory addresses guest RAM by guest-physical address. It is built
// from the RAM ranges (one per KVM memory slot) and the host mappings of
// the memory blocks behind them.
type GuestMemory struct {
	ranges []x86.RAMRange
	host   [][]byte // host[i] is the mapping of ranges[i]
}

// slice returns the host bytes for [gpa, gpa+n), which must lie in one range.
func (g *GuestMemory) slice(gpa uint64, n int) ([]byte, error) {
	for i, r := range g.ranges {
		if gpa >= r.GuestPhys && gpa < r.End() {
			off := gpa - r.GuestPhys
			if uint64(n) > r.Size-off {
				return nil, fmt.Errorf("guest range %#x+%#x crosses the end of RAM range %#x-%#x", gpa, n, r.GuestPhys, r.End())
			}
			return g.host[i][off : off+uint64(n)], nil
		}
	}
	return nil, fmt.Errorf("guest address %#x is not RAM", gpa)
}

// WriteAt copies p into guest memory at guest-physical address off.
func (g *GuestMemory) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative guest address %d", off)
	}
	b, err := g.slice(uint64(off), len(p))
	if err != nil {
		return 0, err
	}
	return copy(b, p), nil
}

// ReadAt copies guest memory at guest-physical address off into p.
func (g *GuestMemory) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative guest address %d", off)
	}
	b, err := g.slice(uint64(off), len(p))
	if err != nil {
		return 0, err
	}
	return copy(p, b), nil
}
