package bzimage

import (
	"bytes"
	"errors"
	"testing"
)

// TestOffsetsMatchBootProtocol proves every setup header offset and flag
// here equals the number Documentation/arch/x86/boot.rst documents for that
// field ("The Real-Mode Kernel Header", Offset/Size); the numbers are written
// out from the document, not derived from the constants.
func TestOffsetsMatchBootProtocol(t *testing.T) {
	for _, c := range []struct {
		field string
		got   int
		want  int
	}{
		{"boot_params.hdr = setup header start (01F1)", HeaderStart, 0x1F1},
		{"hdr.setup_sects (01F1/1)", OffSetupSects, 0x1F1},
		{"hdr.vid_mode (01FA/2)", OffVidMode, 0x1FA},
		{"hdr.jump offset byte (0200/2: 0xEB, then the offset relative to 0x202)", OffJump, 0x201},
		{"hdr.header \"HdrS\" (0202/4)", OffMagic, 0x202},
		{"hdr.version (0206/2)", OffVersion, 0x206},
		{"hdr.kernel_version (020E/2)", OffKernelVer, 0x20E},
		{"hdr.type_of_loader (0210/1)", OffTypeOfLoader, 0x210},
		{"hdr.loadflags (0211/1)", OffLoadFlags, 0x211},
		{"hdr.ramdisk_image (0218/4)", OffRamdiskImage, 0x218},
		{"hdr.ramdisk_size (021C/4)", OffRamdiskSize, 0x21C},
		{"hdr.heap_end_ptr (0224/2)", OffHeapEndPtr, 0x224},
		{"hdr.cmd_line_ptr (0228/4)", OffCmdLinePtr, 0x228},
		{"hdr.initrd_addr_max (022C/4)", OffInitrdMax, 0x22C},
		{"hdr.relocatable_kernel (0234/1)", OffRelocatable, 0x234},
		{"hdr.xloadflags (0236/2)", OffXLoadFlags, 0x236},
		{"hdr.cmdline_size (0238/4)", OffCmdlineSize, 0x238},
		{"hdr.init_size (0260/4)", OffInitSize, 0x260},

		{"loadflags bit 0 LOADED_HIGH", LoadFlagLoadedHigh, 0x01},
		{"loadflags bit 7 CAN_USE_HEAP", LoadFlagCanUseHeap, 0x80},
		{"xloadflags bit 0 XLF_KERNEL_64", XLFKernel64, 0x01},
		{"xloadflags bit 1 XLF_CAN_BE_LOADED_ABOVE_4G", XLFAbove4G, 0x02},
		{"protocol 2.12 (xloadflags, 64-bit entry), as (major << 8)+minor", MinProtocol64, 0x020C},
	} {
		if c.got != c.want {
			t.Errorf("%s: header.go has %#x, the boot protocol says %#x", c.field, c.got, c.want)
		}
	}
}

// image is a minimal bzImage head: protocol 2.15, 64-bit, above 4G, loaded
// high, 27 setup sectors, a kernel_version string.
func image() []byte {
	img := make([]byte, 0x1000)
	img[0x1f1] = 27
	img[0x201] = 0x66 // header ends at 0x268
	copy(img[0x202:], "HdrS")
	img[0x206], img[0x207] = 0x0f, 0x02
	img[0x20e], img[0x20f] = 0x00, 0x02 // kernel_version at 0x200 + 0x200
	img[0x211] = 0x01
	img[0x22c], img[0x22d], img[0x22e], img[0x22f] = 0xff, 0xff, 0xff, 0x7f
	img[0x234] = 1
	img[0x236] = 0x03
	img[0x238] = 0xff
	img[0x239] = 0x07
	img[0x260], img[0x262] = 0x00, 0x40 // init_size 0x400000
	copy(img[0x400:], "6.99.0-test (fake) #1\x00")
	return img
}

func TestParseReadsEveryField(t *testing.T) {
	img := image()
	h, err := Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	want := Header{SetupSects: 27, Protocol: 0x020f, LoadFlags: 0x01, XLoadFlags: 0x03, KernelVer: 0x200,
		CmdlineSize: 0x7ff, InitrdMax: 0x7fffffff, InitSize: 0x400000, Relocatable: true, End: 0x268}
	if *h != want {
		t.Fatalf("Parse = %+v\nwant    %+v", *h, want)
	}
	if h.SetupSize() != 28*512 || h.ProtocolString() != "2.15" {
		t.Errorf("SetupSize %d, ProtocolString %q", h.SetupSize(), h.ProtocolString())
	}
	if v := h.KernelVersion(bytes.NewReader(img)); v != "6.99.0-test (fake) #1" {
		t.Errorf("KernelVersion = %q", v)
	}
}

// setup_sects 0 means 4 (boot.rst); no kernel_version offset, or a string
// without a NUL within 128 bytes, reads as "".
func TestParseDefaultsAndMissingVersion(t *testing.T) {
	img := image()
	img[0x1f1] = 0
	img[0x20f] = 0
	h, err := Parse(img)
	if err != nil {
		t.Fatal(err)
	}
	if h.SetupSects != 4 || h.KernelVersion(bytes.NewReader(img)) != "" {
		t.Errorf("SetupSects %d, KernelVersion %q", h.SetupSects, h.KernelVersion(bytes.NewReader(img)))
	}
	img = image()
	copy(img[0x400:], bytes.Repeat([]byte("x"), 128))
	if v, _ := Parse(img); v.KernelVersion(bytes.NewReader(img)) != "" {
		t.Errorf("an unterminated kernel_version read as %q", v.KernelVersion(bytes.NewReader(img)))
	}
}

func TestParseRefusesShortAndForeignImages(t *testing.T) {
	if _, err := Parse(image()[:HeaderSize-1]); !errors.Is(err, ErrTooShort) {
		t.Errorf("short image: %v", err)
	}
	elf := image()
	copy(elf, "\x7fELF")
	copy(elf[0x202:], "\x00\x00\x00\x00")
	if _, err := Parse(elf); !errors.Is(err, ErrNoMagic) {
		t.Errorf("ELF image: %v", err)
	}
}
