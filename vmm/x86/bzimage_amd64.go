package x86

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/pmvm/pmvm/vmm/x86/bzimage"
)

// Offsets in struct boot_params (Documentation/arch/x86/zero-page.rst); those
// of its embedded setup header (Documentation/arch/x86/boot.rst) are
// package bzimage's, which kexec reads too.
const (
	zpACPIRSDPAddr    = 0x070
	zpExtRamdiskImage = 0x0c0
	zpExtRamdiskSize  = 0x0c4
	zpExtCmdLinePtr   = 0x0c8
	zpE820Entries     = 0x1e8
	zpE820Table       = 0x2d0
	maxE820Entries    = 128
	e820EntrySize     = 20
	zeroPageSize      = 0x1000 // sizeof(struct boot_params)

	entry64Offset = 0x200 // startup_64 is 0x200 past the protected-mode start
)

// Kernel is a parsed bzImage.
type Kernel struct {
	image       []byte
	setupSize   int // real-mode part, skipped: we enter at 64-bit
	hdrEnd      int // offset just past the setup header
	Version     uint16
	CmdlineSize uint32
	InitrdMax   uint32
	InitSize    uint32
	Relocatable bool
}

// ParseBzImage checks that image is a bzImage pmvm can boot with the 64-bit
// boot protocol and returns it parsed.
func ParseBzImage(image []byte) (*Kernel, error) {
	if len(image) < 0x1000 {
		return nil, fmt.Errorf("kernel image is %d bytes: too small to be a bzImage", len(image))
	}
	h, err := bzimage.Parse(image)
	if errors.Is(err, bzimage.ErrNoMagic) {
		return nil, fmt.Errorf("kernel image has no \"HdrS\" setup header: not a bzImage (pmvm boots bzImage files such as /boot/vmlinuz-*)")
	} else if err != nil {
		return nil, fmt.Errorf("kernel image: %w", err)
	}
	k := &Kernel{image: image, Version: h.Protocol, hdrEnd: h.End}
	if k.Version < bzimage.MinProtocol64 {
		return nil, fmt.Errorf("kernel speaks boot protocol %s; pmvm needs 2.12 or newer (Linux 3.8+)", h.ProtocolString())
	}
	if h.XLoadFlags&bzimage.XLFKernel64 == 0 {
		return nil, fmt.Errorf("kernel has no 64-bit entry point (XLF_KERNEL_64 not set): use a 64-bit x86 kernel")
	}
	if h.LoadFlags&bzimage.LoadFlagLoadedHigh == 0 {
		return nil, fmt.Errorf("kernel is a zImage (not loaded high): use a bzImage")
	}
	k.setupSize = h.SetupSize()
	if k.setupSize >= len(image) {
		return nil, fmt.Errorf("kernel setup (%d bytes) is larger than the image (%d bytes): truncated file?", k.setupSize, len(image))
	}
	k.CmdlineSize, k.InitrdMax, k.InitSize, k.Relocatable = h.CmdlineSize, h.InitrdMax, h.InitSize, h.Relocatable
	return k, nil
}

// ProtectedModeSize is the size of the part loaded at HighMemStart.
func (k *Kernel) ProtectedModeSize() int { return len(k.image) - k.setupSize }

// BootSpec is everything the zero page describes.
type BootSpec struct {
	Cmdline  string
	Initrd   []byte
	RAM      []RAMRange
	RSDPAddr uint64
}

// Boot is what Load placed in guest memory.
type Boot struct {
	Entry      uint64 // 64-bit entry point (RIP)
	ZeroPage   uint64 // RSI
	KernelEnd  uint64
	InitrdAddr uint64
	E820       []E820Entry
}

// Load writes the protected-mode kernel, command line, initrd and zero page
// into guest memory (mem is addressed by guest-physical address).
func (k *Kernel) Load(mem io.WriterAt, spec BootSpec) (*Boot, error) {
	e820, err := E820(spec.RAM)
	if err != nil {
		return nil, err
	}
	lowEnd := LowRAMEnd(spec.RAM)
	b := &Boot{Entry: HighMemStart + entry64Offset, ZeroPage: ZeroPageAddr, E820: e820}

	pm := k.image[k.setupSize:]
	b.KernelEnd = HighMemStart + uint64(len(pm))
	// The decompressor needs init_size bytes from the load address.
	need := HighMemStart + uint64(k.InitSize)
	if need < b.KernelEnd {
		need = b.KernelEnd
	}
	if need > lowEnd {
		return nil, fmt.Errorf("kernel needs %d MiB from 1 MiB up, the first memory block ends at %d MiB", (need-HighMemStart)>>20, lowEnd>>20)
	}
	if _, err := mem.WriteAt(pm, HighMemStart); err != nil {
		return nil, fmt.Errorf("load kernel: %w", err)
	}

	maxCmd := uint32(CmdlineMax - 1)
	if k.CmdlineSize != 0 && k.CmdlineSize < maxCmd {
		maxCmd = k.CmdlineSize
	}
	if uint32(len(spec.Cmdline)) > maxCmd {
		return nil, fmt.Errorf("kernel command line is %d bytes, the kernel accepts at most %d", len(spec.Cmdline), maxCmd)
	}
	if _, err := mem.WriteAt(append([]byte(spec.Cmdline), 0), CmdlineAddr); err != nil {
		return nil, fmt.Errorf("write command line: %w", err)
	}

	zp := make([]byte, zeroPageSize)
	if k.hdrEnd > zeroPageSize || k.hdrEnd > len(k.image) {
		return nil, fmt.Errorf("kernel setup header claims to end at %#x: corrupt image", k.hdrEnd)
	}
	copy(zp[bzimage.HeaderStart:k.hdrEnd], k.image[bzimage.HeaderStart:k.hdrEnd])
	binary.LittleEndian.PutUint16(zp[bzimage.OffVidMode:], 0xffff) // "normal" text mode
	zp[bzimage.OffTypeOfLoader] = 0xff                             // undefined boot loader
	zp[bzimage.OffLoadFlags] |= bzimage.LoadFlagCanUseHeap
	binary.LittleEndian.PutUint16(zp[bzimage.OffHeapEndPtr:], 0xfe00)
	binary.LittleEndian.PutUint32(zp[bzimage.OffCmdLinePtr:], CmdlineAddr)
	binary.LittleEndian.PutUint32(zp[zpExtCmdLinePtr:], 0)
	binary.LittleEndian.PutUint64(zp[zpACPIRSDPAddr:], spec.RSDPAddr)

	if len(spec.Initrd) > 0 {
		limit := lowEnd
		if k.InitrdMax != 0 && uint64(k.InitrdMax)+1 < limit {
			limit = uint64(k.InitrdMax) + 1
		}
		size := uint64(len(spec.Initrd))
		if size > limit {
			return nil, fmt.Errorf("initrd is %d MiB, more than the %d MiB of low memory", size>>20, limit>>20)
		}
		addr := (limit - size) &^ 0xfff
		if addr < need {
			return nil, fmt.Errorf("initrd (%d MiB) does not fit between the kernel (ends at %d MiB) and the end of low memory (%d MiB): give the first memory block more RAM", size>>20, need>>20, limit>>20)
		}
		if _, err := mem.WriteAt(spec.Initrd, int64(addr)); err != nil {
			return nil, fmt.Errorf("load initrd: %w", err)
		}
		b.InitrdAddr = addr
		binary.LittleEndian.PutUint32(zp[bzimage.OffRamdiskImage:], uint32(addr))
		binary.LittleEndian.PutUint32(zp[bzimage.OffRamdiskSize:], uint32(size))
		binary.LittleEndian.PutUint32(zp[zpExtRamdiskImage:], uint32(addr>>32))
		binary.LittleEndian.PutUint32(zp[zpExtRamdiskSize:], uint32(size>>32))
	}

	zp[zpE820Entries] = byte(len(e820))
	for i, e := range e820 {
		o := zpE820Table + i*e820EntrySize
		binary.LittleEndian.PutUint64(zp[o:], e.Addr)
		binary.LittleEndian.PutUint64(zp[o+8:], e.Size)
		binary.LittleEndian.PutUint32(zp[o+16:], e.Type)
	}
	if _, err := mem.WriteAt(zp, ZeroPageAddr); err != nil {
		return nil, fmt.Errorf("write zero page: %w", err)
	}
	return b, nil
}
