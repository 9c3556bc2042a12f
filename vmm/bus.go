package vmm

import (
	"fmt"
	"sort"
	"sync/atomic"
)

// PortDevice is a device model on the I/O port bus. Offsets are relative
// to the device's base port. Models are called from every vCPU thread and
// do their own locking.
type PortDevice interface {
	Read(offset uint16, data []byte)
	Write(offset uint16, data []byte)
}

type portRange struct {
	base, count uint16
	name        string
	dev         PortDevice
}

// PortBus routes port I/O exits to device models. It is built before the
// vCPUs start and never changes afterwards, so lookups take no lock.
type PortBus struct {
	ranges []portRange // sorted by base, non-overlapping

	// unhandled counts accesses to ports no device claims (reads see 0xff).
	unhandled atomic.Uint64
}

// Register claims [base, base+count) for dev.
func (b *PortBus) Register(name string, base, count uint16, dev PortDevice) error {
	if count == 0 || uint32(base)+uint32(count) > 0x10000 {
		return fmt.Errorf("port range %#x+%d of %s is invalid", base, count, name)
	}
	for _, r := range b.ranges {
		if base < r.base+r.count && r.base < base+count {
			return fmt.Errorf("ports %#x-%#x of %s overlap %s at %#x-%#x", base, base+count-1, name, r.name, r.base, r.base+r.count-1)
		}
	}
	b.ranges = append(b.ranges, portRange{base: base, count: count, name: name, dev: dev})
	sort.Slice(b.ranges, func(i, j int) bool { return b.ranges[i].base < b.ranges[j].base })
	return nil
}

func (b *PortBus) find(port uint16) *portRange {
	i := sort.Search(len(b.ranges), func(i int) bool { return b.ranges[i].base+b.ranges[i].count > port })
	if i < len(b.ranges) && b.ranges[i].base <= port {
		return &b.ranges[i]
	}
	return nil
}

// In handles a guest read of len(data) bytes from port.
func (b *PortBus) In(port uint16, data []byte) {
	if r := b.find(port); r != nil {
		r.dev.Read(port-r.base, data)
		return
	}
	b.unhandled.Add(1)
	for i := range data {
		data[i] = 0xff
	}
}

// Out handles a guest write of data to port.
func (b *PortBus) Out(port uint16, data []byte) {
	if r := b.find(port); r != nil {
		r.dev.Write(port-r.base, data)
		return
	}
	b.unhandled.Add(1)
}

// Unhandled is how many accesses hit no device.
func (b *PortBus) Unhandled() uint64 { return b.unhandled.Load() }
