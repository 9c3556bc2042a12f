package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
)

type uartRecord struct {
	IER, LCR, MCR, SCR uint8
	DLL, DLM           uint8
	RX                 []byte `json:"rx,omitempty"`
}

type machineRecord struct {
	RunState string `json:"runstate"`
	VCPUs    int    `json:"vcpus"`
}

// sampleFile is a reboot-mode file with the sections a suspended demo VM
// has: JSON records, a binary CMOS image and an empty payload.
func sampleFile(t testing.TB) *File {
	t.Helper()
	f := &File{Header: Header{
		Created:     time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC),
		PMVMVersion: "v0.4.0-test",
		VMName:      "demo",
		Mode:        memspec.ModeReboot,
	}}
	for i := range f.Header.ConfigFingerprint {
		f.Header.ConfigFingerprint[i] = byte(0xa0 + i)
	}
	cmos := make([]byte, 128)
	for i := range cmos {
		cmos[i] = byte(i * 7)
	}
	require.NoError(t, f.AddJSON("machine", 1, machineRecord{RunState: "suspended", VCPUs: 2}))
	require.NoError(t, f.AddJSON("vcpu/0", 1, map[string]any{"apic_id": 0, "bsp": true}))
	require.NoError(t, f.AddJSON("vcpu/1", 1, map[string]any{"apic_id": 1, "bsp": false}))
	require.NoError(t, f.AddJSON("uart@0x3f8", 2, uartRecord{IER: 1, LCR: 3, MCR: 8, DLL: 1, RX: []byte("login: ")}))
	require.NoError(t, f.Add("cmos@0x70", 1, cmos))
	require.NoError(t, f.AddJSON("acpi-pm@0x600", 1, map[string]uint16{"pm1_sts": 0x8000, "pm1_en": 0x0100, "pm1_cnt": 0x1401}))
	require.NoError(t, f.AddJSON("memory/ram0", 1, map[string]any{"backing": "devdax", "path": "/dev/dax0.0", "size": 1 << 30}))
	require.NoError(t, f.AddJSON("clock", 1, map[string]int64{"kvmclock_ns": 123456789}))
	require.NoError(t, f.Add("marker", 0, nil))
	return f
}

// withFormat is f as Decode returns it: Format set to the current version.
func withFormat(f *File) *File {
	c := *f
	c.Header.Format = Version{FormatMajor, FormatMinor}
	return &c
}

func encode(t testing.TB, f *File) []byte {
	t.Helper()
	b, err := f.Encode()
	require.NoError(t, err)
	return b
}

// reseal recomputes both checksums after a test edited b, leaving the
// total length field as the test set it.
func reseal(b []byte) []byte {
	binary.LittleEndian.PutUint32(b[offHeaderCRC:], crc32.Checksum(b[:offHeaderCRC], castagnoli))
	if len(b) >= fixedLen+trailerLen {
		sum := sha256.Sum256(b[:len(b)-trailerLen])
		copy(b[len(b)-trailerLen:], sum[:])
	}
	return b
}

// setTotal writes the total length field (and reseals the header CRC).
func setTotal(b []byte, total uint64) {
	binary.LittleEndian.PutUint64(b[offTotal:], total)
	binary.LittleEndian.PutUint32(b[offHeaderCRC:], crc32.Checksum(b[:offHeaderCRC], castagnoli))
}

// sectionOffset finds where section name starts (its name-length byte).
func sectionOffset(t testing.TB, b []byte, name string) int {
	t.Helper()
	needle := append([]byte{byte(len(name))}, name...)
	i := bytes.Index(b, needle)
	require.GreaterOrEqual(t, i, 0, "section %q not found", name)
	return i
}

// sectionCountOffset is where the section count lives.
func sectionCountOffset(b []byte) int {
	return fixedLen + 4 + int(binary.LittleEndian.Uint32(b[fixedLen:]))
}

// bytesAllocated reports how many heap bytes fn allocates (averaged over a
// few runs, so a stray background allocation does not dominate).
func bytesAllocated(fn func()) uint64 {
	const runs = 5
	fn() // warm up lazily initialized tables
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		fn()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / runs
}
