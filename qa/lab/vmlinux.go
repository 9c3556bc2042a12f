package lab

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/ulikunitz/xz/lzma"
)

// xzMagic starts every XZ stream (the payload inside a Debian bzImage).
var xzMagic = []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}

// xz filter IDs (xz file format spec, section 5.3).
const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
)

// ErrNotXZ: the bzImage carries no XZ-compressed vmlinux.
var ErrNotXZ = errors.New("vmlinux: bzImage payload is not XZ")

// ExtractVmlinux returns the vmlinux ELF embedded in a bzImage: the XZ stream
// that starts at the first FD 37 7A 58 5A 00 magic.
//
// The kernel compresses it with `xz --check=crc32 --x86 --lzma2`, and
// ulikunitz/xz's stream reader knows no BCJ filter, so this parses the XZ
// container itself, decodes the LZMA2 data with ulikunitz/xz/lzma, undoes the
// x86 BCJ filter and verifies the block's CRC32. Anything after the first
// block (index, footer, the rest of the bzImage) is ignored.
func ExtractVmlinux(bzImage []byte) ([]byte, error) {
	off := bytes.Index(bzImage, xzMagic)
	if off < 0 {
		if bytes.Contains(bzImage, []byte{0x28, 0xB5, 0x2F, 0xFD}) {
			return nil, fmt.Errorf("%w: the payload is zstd (Debian's 6.12 kernels); boot the bzImage itself (QEMU -kernel vmlinuz, about 3 s slower under TCG)", ErrNotXZ)
		}
		return nil, fmt.Errorf("%w: no FD 37 7A 58 5A 00 magic", ErrNotXZ)
	}
	out, err := decodeXZFirstBlock(bzImage[off:])
	if err != nil {
		return nil, fmt.Errorf("vmlinux: XZ stream at offset %#x: %w", off, err)
	}
	if _, err := elf.NewFile(bytes.NewReader(out)); err != nil {
		return nil, fmt.Errorf("vmlinux: decompressed payload is not an ELF: %w", err)
	}
	return out, nil
}

// ExtractVmlinuxFile is ExtractVmlinux on files; the output is written atomically.
func ExtractVmlinuxFile(bzImagePath, outPath string) error {
	in, err := os.ReadFile(bzImagePath)
	if err != nil {
		return err
	}
	out, err := ExtractVmlinux(in)
	if err != nil {
		return fmt.Errorf("%s: %w", bzImagePath, err)
	}
	return writeFileAtomic(outPath, out, 0o644)
}

// decodeXZFirstBlock decodes the first block of an XZ stream whose filter
// chain is LZMA2 optionally preceded by x86 BCJ.
func decodeXZFirstBlock(s []byte) ([]byte, error) {
	if len(s) < 12+8 {
		return nil, io.ErrUnexpectedEOF
	}
	// Stream header: magic(6) flags(2) crc32(4).
	if crc32.ChecksumIEEE(s[6:8]) != binary.LittleEndian.Uint32(s[8:12]) {
		return nil, errors.New("stream header CRC mismatch")
	}
	if s[6] != 0 {
		return nil, fmt.Errorf("unsupported stream flags %#x", s[6:8])
	}
	checkType := s[7] & 0x0f
	checkSize := map[byte]int{0x00: 0, 0x01: 4, 0x04: 8, 0x0a: 32}[checkType]
	// Block header.
	bh := s[12:]
	hsize := (int(bh[0]) + 1) * 4
	if bh[0] == 0 || len(bh) < hsize {
		return nil, errors.New("no block (empty stream) or truncated block header")
	}
	if crc32.ChecksumIEEE(bh[:hsize-4]) != binary.LittleEndian.Uint32(bh[hsize-4:hsize]) {
		return nil, errors.New("block header CRC mismatch")
	}
	flags := bh[1]
	nfilters := int(flags&0x03) + 1
	p := 2
	readVLI := func() (uint64, error) {
		var v uint64
		for i := 0; i < 9 && p < hsize-4; i++ {
			b := bh[p]
			p++
			v |= uint64(b&0x7f) << (7 * i)
			if b&0x80 == 0 {
				return v, nil
			}
		}
		return 0, errors.New("bad variable-length integer in block header")
	}
	if flags&0x40 != 0 { // compressed size present
		if _, err := readVLI(); err != nil {
			return nil, err
		}
	}
	if flags&0x80 != 0 { // uncompressed size present
		if _, err := readVLI(); err != nil {
			return nil, err
		}
	}
	var ids []uint64
	var lzma2Prop byte
	for i := 0; i < nfilters; i++ {
		id, err := readVLI()
		if err != nil {
			return nil, err
		}
		psize, err := readVLI()
		if err != nil {
			return nil, err
		}
		if p+int(psize) > hsize-4 {
			return nil, errors.New("filter properties overrun block header")
		}
		props := bh[p : p+int(psize)]
		p += int(psize)
		switch id {
		case xzFilterX86:
			if len(props) != 0 {
				return nil, errors.New("x86 BCJ filter with a start offset is not supported")
			}
		case xzFilterLZMA2:
			if len(props) != 1 {
				return nil, errors.New("bad LZMA2 properties")
			}
			lzma2Prop = props[0]
		default:
			return nil, fmt.Errorf("unsupported XZ filter %#x (only x86 BCJ and LZMA2 are implemented)", id)
		}
		ids = append(ids, id)
	}
	if ids[len(ids)-1] != xzFilterLZMA2 {
		return nil, errors.New("last filter must be LZMA2")
	}
	if lzma2Prop > 40 {
		return nil, fmt.Errorf("bad LZMA2 dictionary property %d", lzma2Prop)
	}
	dictCap := (2 | int(lzma2Prop&1)) << (lzma2Prop/2 + 11)
	if dictCap < lzma.MinDictCap {
		dictCap = lzma.MinDictCap
	}

	data := bytes.NewReader(s[12+hsize:])
	r, err := lzma.Reader2Config{DictCap: dictCap}.NewReader2(data)
	if err != nil {
		return nil, fmt.Errorf("LZMA2: %w", err)
	}
	var out bytes.Buffer
	if _, err := io.Copy(&out, r); err != nil {
		return nil, fmt.Errorf("LZMA2: %w", err)
	}
	buf := out.Bytes()
	for i := len(ids) - 2; i >= 0; i-- { // undo the non-last filters, last first
		if ids[i] == xzFilterX86 {
			x86BCJDecode(buf)
		}
	}
	// Block padding to a multiple of 4, then the check.
	consumed := int(data.Size()) - data.Len()
	pos := 12 + hsize + consumed
	pos += (4 - (hsize+consumed)%4) % 4
	if checkType == 0x01 {
		if pos+checkSize > len(s) {
			return nil, errors.New("truncated block check")
		}
		if want := binary.LittleEndian.Uint32(s[pos:]); crc32.ChecksumIEEE(buf) != want {
			return nil, fmt.Errorf("CRC32 mismatch: got %#x want %#x", crc32.ChecksumIEEE(buf), want)
		}
	}
	return buf, nil
}

// x86BCJDecode undoes the XZ x86 branch/call/jump filter in place, for a
// buffer that starts at uncompressed offset 0 (port of liblzma simple/x86.c).
func x86BCJDecode(buf []byte) {
	maskToAllowed := [8]bool{true, true, true, false, true, false, false, false}
	maskToBitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	test86MSByte := func(b byte) bool { return b == 0 || b == 0xff }

	var prevMask uint32
	prevPos := ^uint32(4) // (uint32)(-5)
	if len(buf) < 5 {
		return
	}
	limit := len(buf) - 5
	i := 0
	for i <= limit {
		b := buf[i]
		if b != 0xE8 && b != 0xE9 {
			i++
			continue
		}
		offset := uint32(i) - prevPos
		prevPos = uint32(i)
		if offset > 5 {
			prevMask = 0
		} else {
			for k := uint32(0); k < offset; k++ {
				prevMask &= 0x77
				prevMask <<= 1
			}
		}
		b = buf[i+4]
		if test86MSByte(b) && maskToAllowed[(prevMask>>1)&7] && (prevMask>>1) < 0x10 {
			src := uint32(b)<<24 | uint32(buf[i+3])<<16 | uint32(buf[i+2])<<8 | uint32(buf[i+1])
			var dest uint32
			for {
				dest = src - (uint32(i) + 5)
				if prevMask == 0 {
					break
				}
				n := maskToBitNum[prevMask>>1]
				b = byte(dest >> (24 - n*8))
				if !test86MSByte(b) {
					break
				}
				src = dest ^ (1<<(32-n*8) - 1)
			}
			buf[i+4] = ^byte(((dest >> 24) & 1) - 1)
			buf[i+3] = byte(dest >> 16)
			buf[i+2] = byte(dest >> 8)
			buf[i+1] = byte(dest)
			i += 5
			prevMask = 0
		} else {
			i++
			prevMask |= 1
			if test86MSByte(b) {
				prevMask |= 0x10
			}
		}
	}
}
