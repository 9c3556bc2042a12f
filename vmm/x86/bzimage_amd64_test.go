package x86

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The numbers in this file are written out from the Linux x86 boot protocol,
// not derived from bzimage.go's constants:
//
//   - Documentation/arch/x86/zero-page.rst and
//     arch/x86/include/uapi/asm/bootparam.h (struct boot_params);
//   - Documentation/arch/x86/boot.rst (the setup header, its flags and the
//     64-bit entry point).

// TestZeroPageOffsetsMatchBootProtocol proves every boot_params offset and
// size in bzimage.go equals the number the Linux boot protocol documents
// for that field; a wrong constant fails with the field's name. The setup
// header's are proved in package bzimage.
func TestZeroPageOffsetsMatchBootProtocol(t *testing.T) {
	for _, c := range []struct {
		field string
		got   int
		want  int
	}{
		// zero-page.rst: Offset/Size of struct boot_params fields.
		{"boot_params.acpi_rsdp_addr (070/008)", zpACPIRSDPAddr, 0x070},
		{"boot_params.ext_ramdisk_image (0C0/004)", zpExtRamdiskImage, 0x0C0},
		{"boot_params.ext_ramdisk_size (0C4/004)", zpExtRamdiskSize, 0x0C4},
		{"boot_params.ext_cmd_line_ptr (0C8/004)", zpExtCmdLinePtr, 0x0C8},
		{"boot_params.e820_entries (1E8/001)", zpE820Entries, 0x1E8},
		{"boot_params.e820_table (2D0/A00)", zpE820Table, 0x2D0},
		{"E820_MAX_ENTRIES_ZEROPAGE (bootparam.h)", maxE820Entries, 128},
		{"sizeof(struct boot_e820_entry) (packed u64 addr, u64 size, u32 type)", e820EntrySize, 20},
		{"sizeof(struct boot_params)", zeroPageSize, 0x1000},

		{"64-bit entry point: 0x200 into the protected-mode kernel", entry64Offset, 0x200},
	} {
		assert.Equal(t, c.want, c.got, "%s: bzimage.go has %#x, the boot protocol says %#x", c.field, c.got, c.want)
	}
	// zero-page.rst: e820_table is A00 bytes and ends before eddbuf (D00).
	assert.Equal(t, 0xA00, maxE820Entries*e820EntrySize, "size of boot_params.e820_table")
	assert.LessOrEqual(t, zpE820Table+maxE820Entries*e820EntrySize, 0xD00, "e820_table ends before boot_params.eddbuf (D00)")
}

// bpMem is guest memory for the boot protocol tests, addressed by
// guest-physical address.
type bpMem []byte

func (m bpMem) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

// bpImage returns a bzImage built by hand at the boot.rst offsets: setup
// header fields set to recognisable values, a header whose end (jump) is
// 0x26C followed by junk that must not reach the zero page, and pm bytes
// of protected-mode kernel after (setup_sects+1) sectors.
func bpImage(setupSects byte, pm int) []byte {
	sects := int(setupSects)
	if sects == 0 {
		sects = 4
	}
	img := make([]byte, (sects+1)*512+pm)
	le := binary.LittleEndian
	img[0x1F1] = setupSects                                // setup_sects
	le.PutUint16(img[0x1F2:], 1)                           // root_flags
	le.PutUint32(img[0x1F4:], uint32(pm/16))               // syssize
	le.PutUint16(img[0x1FA:], 0xFFFD)                      // vid_mode ("ask"), the loader overrides
	le.PutUint16(img[0x1FE:], 0xAA55)                      // boot_flag
	img[0x200], img[0x201] = 0xEB, 0x6A                    // jump: the header ends at 0x202+0x6A
	copy(img[0x202:], "HdrS")                              // header
	le.PutUint16(img[0x206:], 0x020F)                      // version 2.15
	le.PutUint16(img[0x20E:], 0x3A00)                      // kernel_version
	img[0x211] = 0x01                                      // loadflags: LOADED_HIGH
	le.PutUint32(img[0x214:], 0x100000)                    // code32_start
	le.PutUint32(img[0x22C:], 0x7FFFFFFF)                  // initrd_addr_max
	le.PutUint32(img[0x230:], 0x200000)                    // kernel_alignment
	img[0x234] = 1                                         // relocatable_kernel
	img[0x235] = 21                                        // min_alignment
	le.PutUint16(img[0x236:], 0x0001|0x0002)               // xloadflags: XLF_KERNEL_64, CAN_BE_LOADED_ABOVE_4G
	le.PutUint32(img[0x238:], 2047)                        // cmdline_size
	le.PutUint64(img[0x258:], 0x1000000)                   // pref_address
	le.PutUint32(img[0x260:], 6<<20)                       // init_size
	le.PutUint32(img[0x268:], 0x12345)                     // kernel_info_offset
	copy(img[0x26C:0x270], []byte{0xEE, 0xEE, 0xEE, 0xEE}) // past the header
	for i := (sects + 1) * 512; i < len(img); i++ {
		img[i] = byte(i * 7)
	}
	return img
}

// TestParseBzImageReadsTheSetupHeader proves ParseBzImage reads version,
// cmdline_size, initrd_addr_max, init_size and relocatable_kernel at their
// boot.rst offsets, and sizes the real-mode part as (setup_sects+1) sectors,
// with setup_sects 0 meaning 4.
func TestParseBzImageReadsTheSetupHeader(t *testing.T) {
	for _, sects := range []byte{0, 4, 27} {
		img := bpImage(sects, 8192)
		k, err := ParseBzImage(img)
		require.NoError(t, err, "setup_sects %d", sects)
		assert.Equal(t, uint16(0x020F), k.Version)
		assert.Equal(t, uint32(2047), k.CmdlineSize)
		assert.Equal(t, uint32(0x7FFFFFFF), k.InitrdMax)
		assert.Equal(t, uint32(6<<20), k.InitSize)
		assert.True(t, k.Relocatable)
		assert.Equal(t, 8192, k.ProtectedModeSize(), "setup_sects %d", sects)
	}

	img := bpImage(4, 8192)
	img[0x236] = 0x02 // XLF_CAN_BE_LOADED_ABOVE_4G without XLF_KERNEL_64
	_, err := ParseBzImage(img)
	assert.ErrorContains(t, err, "XLF_KERNEL_64")

	img = bpImage(4, 8192)
	img[0x211] = 0x80 // CAN_USE_HEAP without LOADED_HIGH: a zImage
	_, err = ParseBzImage(img)
	assert.ErrorContains(t, err, "zImage")

	img = bpImage(4, 8192)
	binary.LittleEndian.PutUint16(img[0x206:], 0x020B) // 2.11
	_, err = ParseBzImage(img)
	assert.ErrorContains(t, err, "2.12")
}

// TestLoadWritesTheBootProtocolZeroPage proves Load writes struct
// boot_params as the boot protocol defines it, byte for byte: the zero page
// is compared whole with one built here at the documented offsets (the
// kernel's setup header 0x1F1..0x202+jump copied and nothing past it,
// vid_mode 0xFFFF, type_of_loader 0xFF, loadflags |= CAN_USE_HEAP,
// heap_end_ptr, cmd_line_ptr, ramdisk_image/size, ext_* high halves 0,
// acpi_rsdp_addr, e820_entries and e820_table as 20-byte entries, all else
// zero). It also checks the 64-bit entry at 1 MiB + 0x200 and where the
// kernel, command line and initrd land.
func TestLoadWritesTheBootProtocolZeroPage(t *testing.T) {
	const ramSize = 64 << 20
	img := bpImage(4, 8192)
	k, err := ParseBzImage(img)
	require.NoError(t, err)
	mem := make(bpMem, ramSize)
	initrd := bytes.Repeat([]byte{0x1D}, 1<<20+123)
	const cmdline = "console=ttyS0 quiet"
	b, err := k.Load(mem, BootSpec{
		Cmdline:  cmdline,
		Initrd:   initrd,
		RAM:      []RAMRange{{Block: 0, GuestPhys: 0, BlockOffset: 0, Size: ramSize}},
		RSDPAddr: 0xE0000,
	})
	require.NoError(t, err)

	assert.Equal(t, uint64(0x100000+0x200), b.Entry, "64-bit entry: 0x200 into the kernel loaded at 1 MiB")
	assert.Equal(t, img[5*512:], []byte(mem[0x100000:0x100000+8192]), "protected-mode kernel at 1 MiB")
	assert.Equal(t, cmdline+"\x00", string(mem[CmdlineAddr:CmdlineAddr+len(cmdline)+1]))
	require.NotZero(t, b.InitrdAddr)
	assert.Zero(t, b.InitrdAddr%4096, "initrd page-aligned")
	assert.LessOrEqual(t, b.InitrdAddr+uint64(len(initrd)), uint64(ramSize))
	assert.GreaterOrEqual(t, b.InitrdAddr, uint64(0x100000+6<<20), "initrd above init_size")
	assert.True(t, bytes.Equal(initrd, mem[b.InitrdAddr:b.InitrdAddr+uint64(len(initrd))]), "initrd in memory")
	require.NotEmpty(t, b.E820)

	want := make([]byte, 0x1000)
	le := binary.LittleEndian
	copy(want[0x1F1:0x26C], img[0x1F1:0x26C]) // the setup header, up to 0x202 + jump offset
	le.PutUint16(want[0x1FA:], 0xFFFF)        // vid_mode: "normal"
	want[0x210] = 0xFF                        // type_of_loader: undefined
	want[0x211] = 0x01 | 0x80                 // loadflags: LOADED_HIGH | CAN_USE_HEAP
	le.PutUint16(want[0x224:], 0xFE00)        // heap_end_ptr
	le.PutUint32(want[0x228:], CmdlineAddr)   // cmd_line_ptr
	le.PutUint32(want[0x0C8:], 0)             // ext_cmd_line_ptr
	le.PutUint64(want[0x070:], 0xE0000)       // acpi_rsdp_addr
	le.PutUint32(want[0x218:], uint32(b.InitrdAddr))
	le.PutUint32(want[0x21C:], uint32(len(initrd)))
	le.PutUint32(want[0x0C0:], 0) // ext_ramdisk_image
	le.PutUint32(want[0x0C4:], 0) // ext_ramdisk_size
	want[0x1E8] = byte(len(b.E820))
	for i, e := range b.E820 {
		o := 0x2D0 + 20*i
		le.PutUint64(want[o:], e.Addr)
		le.PutUint64(want[o+8:], e.Size)
		le.PutUint32(want[o+16:], e.Type)
	}
	zp := mem[b.ZeroPage : b.ZeroPage+0x1000]
	var diffs []string
	for off := range want {
		if want[off] != zp[off] && len(diffs) < 20 {
			diffs = append(diffs, fmt.Sprintf("byte %#x is %#02x, want %#02x", off, zp[off], want[off]))
		}
	}
	assert.Empty(t, diffs, "the zero page differs from the boot protocol layout (first 20 bytes shown)")

	// The e820 map covers the RAM: the first entry is usable RAM at 0.
	assert.Equal(t, uint64(0), le.Uint64(zp[0x2D0:]))
	assert.Equal(t, uint32(1), le.Uint32(zp[0x2D0+16:]), "E820_TYPE_RAM is 1")
}
