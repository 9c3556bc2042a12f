package main

import "unsafe"

// addrOf is the virtual address of the first byte of b (an mmap'd page, so
// the Go GC never moves it).
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
