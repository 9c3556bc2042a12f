package vmm

import (
	"fmt"

	"github.com/pmvm/pmvm/vmm/x86"
)

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
