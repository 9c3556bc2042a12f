// Package bzimage reads the setup header of a Linux x86 bzImage
// (Documentation/arch/x86/boot.rst). Both the VMM's direct boot (vmm/x86)
// and the host update's kexec check (kexec) read it, so it is a leaf that
// imports nothing of ours: kexec must not pull in the VMM for a header.
package bzimage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Offsets of setup header fields in a kernel image, which are also their
// offsets in struct boot_params (the zero page embeds the header at
// HeaderStart).
const (
	HeaderStart     = 0x1f1
	OffSetupSects   = 0x1f1
	OffVidMode      = 0x1fa
	OffJump         = 0x201 // the byte here + 0x202 is the header's end
	OffMagic        = 0x202 // "HdrS"
	OffVersion      = 0x206
	OffKernelVer    = 0x20e // kernel_version: offset - 0x200 of a C string
	OffTypeOfLoader = 0x210
	OffLoadFlags    = 0x211
	OffRamdiskImage = 0x218
	OffRamdiskSize  = 0x21c
	OffHeapEndPtr   = 0x224
	OffCmdLinePtr   = 0x228
	OffInitrdMax    = 0x22c
	OffRelocatable  = 0x234
	OffXLoadFlags   = 0x236
	OffCmdlineSize  = 0x238
	OffInitSize     = 0x260

	// HeaderSize is how many bytes of an image Parse needs: up to the
	// end of init_size, the last field pmvm reads.
	HeaderSize = OffInitSize + 4
)

// Flags and versions of the boot protocol.
const (
	LoadFlagLoadedHigh = 0x01   // loadflags: protected-mode code at 0x100000
	LoadFlagCanUseHeap = 0x80   // loadflags: heap_end_ptr is valid
	XLFKernel64        = 0x01   // xloadflags: has the 64-bit entry point
	XLFAbove4G         = 0x02   // xloadflags: kernel and initrd may sit above 4 GiB
	MinProtocol64      = 0x020c // 2.12: xloadflags, so the 64-bit entry is declared
)

// Errors of Parse; callers word them for their own use of the kernel.
var (
	ErrTooShort = errors.New("too short for a bzImage setup header")
	ErrNoMagic  = errors.New(`no "HdrS" setup header at 0x202`)
)

// Header is what a bzImage's setup header says.
type Header struct {
	SetupSects  int    // sectors of real-mode setup code after the boot sector (0 in the file means 4)
	Protocol    uint16 // boot protocol version, (major << 8) | minor, e.g. 0x020f
	LoadFlags   uint8
	XLoadFlags  uint16
	KernelVer   uint16 // kernel_version offset (from 0x200); 0 when absent
	CmdlineSize uint32 // longest command line the kernel takes, without its NUL
	InitrdMax   uint32 // highest address the initrd may end at
	InitSize    uint32 // bytes the kernel needs from its load address while decompressing
	Relocatable bool
	End         int // offset just past the header (0x202 plus the jump byte)
}

// Parse reads the setup header at the start of image, which must hold at
// least HeaderSize bytes. It checks only that the header is there; what a
// loader needs of it (a protocol version, 64-bit entry, loadable above
// 4 GiB) is the loader's to judge.
func Parse(image []byte) (*Header, error) {
	if len(image) < HeaderSize {
		return nil, ErrTooShort
	}
	if string(image[OffMagic:OffMagic+4]) != "HdrS" {
		return nil, ErrNoMagic
	}
	h := &Header{
		SetupSects:  int(image[OffSetupSects]),
		Protocol:    binary.LittleEndian.Uint16(image[OffVersion:]),
		LoadFlags:   image[OffLoadFlags],
		XLoadFlags:  binary.LittleEndian.Uint16(image[OffXLoadFlags:]),
		KernelVer:   binary.LittleEndian.Uint16(image[OffKernelVer:]),
		CmdlineSize: binary.LittleEndian.Uint32(image[OffCmdlineSize:]),
		InitrdMax:   binary.LittleEndian.Uint32(image[OffInitrdMax:]),
		InitSize:    binary.LittleEndian.Uint32(image[OffInitSize:]),
		Relocatable: image[OffRelocatable] != 0,
		End:         OffMagic + int(image[OffJump]),
	}
	if h.SetupSects == 0 {
		h.SetupSects = 4
	}
	return h, nil
}

// SetupSize is the size of the real-mode part (boot sector and setup
// sectors) that precedes the protected-mode kernel in the file.
func (h *Header) SetupSize() int { return (h.SetupSects + 1) * 512 }

// ProtocolString is the protocol version as boot.rst writes it ("2.15").
func (h *Header) ProtocolString() string {
	return fmt.Sprintf("%d.%02d", h.Protocol>>8, h.Protocol&0xff)
}

// KernelVersion reads the kernel_version string the header points at
// ("6.12.0-amd64 (debian-kernel@...) #1 SMP ..."), or "" when the header
// has none or no NUL-terminated string is found within 128 bytes.
func (h *Header) KernelVersion(r io.ReaderAt) string {
	if h.KernelVer == 0 {
		return ""
	}
	buf := make([]byte, 128)
	n, _ := r.ReadAt(buf, int64(h.KernelVer)+0x200)
	s, _, found := strings.Cut(string(buf[:n]), "\x00")
	if !found {
		return ""
	}
	return s
}
