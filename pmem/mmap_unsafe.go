package pmem

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapAligned maps size bytes of fd (or anonymous memory when fd is -1) at a
// host virtual address aligned to align, so that KVM can back guest memory
// with huge pages. It reserves size+align bytes of address space with
// PROT_NONE, maps the backing with MAP_FIXED at the first aligned address
// inside the reservation, and gives back the unused head and tail.
func mapAligned(fd int, size, align uint64, prot, flags int) (mem []byte, addr uintptr, err error) {
	resLen := uintptr(size + align)
	res, err := unix.MmapPtr(-1, 0, nil, resLen, unix.PROT_NONE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, 0, err
	}
	head, tail := trim(uintptr(res), uintptr(align))
	start := unsafe.Add(res, head)
	got, err := unix.MmapPtr(fd, 0, start, uintptr(size), prot, flags|unix.MAP_FIXED)
	if err != nil {
		_ = unix.MunmapPtr(res, resLen)
		return nil, 0, err
	}
	if got != start {
		// MAP_FIXED either maps at start or fails; anything else is a bug.
		_ = unix.MunmapPtr(res, resLen)
		panic("pmem: MAP_FIXED mapping moved")
	}
	if head > 0 {
		_ = unix.MunmapPtr(res, head)
	}
	if tail > 0 {
		_ = unix.MunmapPtr(unsafe.Add(start, uintptr(size)), tail)
	}
	return unsafe.Slice((*byte)(start), int(size)), uintptr(start), nil
}

// trim returns how much of a reservation of size+align bytes at base lies
// before the first align-aligned address (head) and after the size bytes
// that follow that address (tail). head+tail == align; align is a power of 2.
func trim(base, align uintptr) (head, tail uintptr) {
	start := (base + align - 1) &^ (align - 1)
	head = start - base
	return head, align - head
}

// unmap releases a mapping made by mapAligned.
func unmap(mem []byte) error {
	if len(mem) == 0 {
		return nil
	}
	return unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(mem)), uintptr(len(mem)))
}
