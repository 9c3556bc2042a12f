package vmm

import (
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm/x86"
)

// A memory backing's identity (its namespace, its inode) survives a cold
// reboot that its contents do not: firmware scrubs or reuses the memory.
// So a save also records a sampled fingerprint of guest memory: the
// SHA-256 of some fixed pages (anchorWindows) and a few hundred chosen at
// random, listed in the state file, a few milliseconds at any RAM size. Most of a guest's memory may
// be zero (never touched), and zeroed memory is what a scrub leaves, so
// the sample is drawn from the pages that are not zero: pages are visited
// in a random order (a random start and a stride coprime with the page
// count, which visits each page once) for a bounded number of visits, and
// the non-zero ones are kept; memory found all zero keeps the pages it
// visited. Restore hashes the listed pages through the mapping, before
// anything writes to guest memory or a vCPU runs, and refuses memory that
// does not match. A sample cannot see every change; it does see memory
// that was cleared or reused as a whole. Files from before the fingerprint
// have none, and resume as they did.

const (
	secFingerprint = "memory-fingerprint"
	// fingerprintAlgorithm names how pages are hashed; a file with another
	// is refused rather than misread.
	fingerprintAlgorithm = "sha256/pages/v1"
	fingerprintPageSize  = 4096
	fingerprintPages     = 256                  // pages hashed per memory block
	fingerprintVisits    = 8 * fingerprintPages // pages looked at, at most, to find them (each visit may fault a page in: 8 MiB at most)
)

type fingerprintRecord struct {
	Algorithm string             `json:"algorithm"`
	PageSize  uint64             `json:"page_size"`
	Blocks    []blockFingerprint `json:"blocks"`
}

type blockFingerprint struct {
	Block  string   `json:"block"`
	Pages  []uint64 `json:"pages"` // page indexes within the block, in hashing order
	SHA256 string   `json:"sha256"`
}

// samplePages picks up to n pages of mem to fingerprint, preferring pages
// that are not zero, visiting at most visits pages in a random order.
func samplePages(mem []byte, n, visits int) []uint64 {
	total := uint64(len(mem)) / fingerprintPageSize
	if total == 0 {
		return nil
	}
	r := rand.New(rand.NewPCG(seed()))
	start := r.Uint64N(total)
	stride := uint64(1)
	if total > 1 {
		stride = 1 + r.Uint64N(total-1)
		for gcd(stride, total) != 1 {
			stride = 1 + r.Uint64N(total-1)
		}
	}
	var picked, zero []uint64
	for k := uint64(0); k < total && k < uint64(visits) && len(picked) < n; k++ {
		i := (start + k*stride) % total
		if isZero(mem[i*fingerprintPageSize : (i+1)*fingerprintPageSize]) {
			if len(zero) < n {
				zero = append(zero, i)
			}
			continue
		}
		picked = append(picked, i)
	}
	if len(picked) == 0 {
		return zero
	}
	return picked
}

func seed() (uint64, uint64) {
	var b [16]byte
	if _, err := crand.Read(b[:]); err != nil {
		t := uint64(time.Now().UnixNano())
		return t, t >> 7
	}
	return binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func isZero(p []byte) bool {
	for len(p) >= 8 {
		if binary.LittleEndian.Uint64(p) != 0 {
			return false
		}
		p = p[8:]
	}
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

// anchorWindows are guest-physical ranges every booted guest holds
// non-zero and keeps: pmvm's ACPI tables (below 1 MiB, which a cold boot
// clears first) and the start of the kernel it loaded at 1 MiB. The random
// sample of a guest that has touched little of its RAM may find no
// non-zero page; these make a scrubbed or reused memory show anyway.
var anchorWindows = []struct{ start, size uint64 }{
	{x86.ACPITablesAddr, x86.HighMemStart - x86.ACPITablesAddr},
	{x86.HighMemStart, 32 * fingerprintPageSize},
}

// anchorPages are the pages of memory block i inside anchorWindows.
func (m *Machine) anchorPages(i int) []uint64 {
	var pages []uint64
	for _, r := range m.ram {
		if r.Block != i {
			continue
		}
		for _, w := range anchorWindows {
			lo, hi := max(w.start, r.GuestPhys), min(w.start+w.size, r.End())
			for gpa := lo &^ (fingerprintPageSize - 1); gpa < hi; gpa += fingerprintPageSize {
				pages = append(pages, (gpa-r.GuestPhys+r.BlockOffset)/fingerprintPageSize)
			}
		}
	}
	return pages
}

// fingerprint hashes the pages of mem: each page's index, then its bytes,
// so that a page found at another index does not match. A page beyond
// mem gives "" (no match).
func fingerprint(mem []byte, pages []uint64) string {
	total := uint64(len(mem)) / fingerprintPageSize
	h := sha256.New()
	var idx [8]byte
	for _, i := range pages {
		if i >= total {
			return ""
		}
		binary.LittleEndian.PutUint64(idx[:], i)
		h.Write(idx[:])
		h.Write(mem[i*fingerprintPageSize : (i+1)*fingerprintPageSize])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// addFingerprint records the fingerprint of every memory block in f.
func (m *Machine) addFingerprint(f *state.File) error {
	start := time.Now()
	rec := fingerprintRecord{Algorithm: fingerprintAlgorithm, PageSize: fingerprintPageSize}
	for i, r := range m.regions {
		pages := append(m.anchorPages(i), samplePages(r.Mem, fingerprintPages, fingerprintVisits)...)
		rec.Blocks = append(rec.Blocks, blockFingerprint{Block: m.cfg.Memory[i].Name, Pages: pages, SHA256: fingerprint(r.Mem, pages)})
	}
	m.log.Debug().Dur("took", time.Since(start)).Msg("guest memory fingerprinted")
	return f.AddJSON(secFingerprint, recordVersion, rec)
}

// checkFingerprint refuses memory whose contents are not the ones the
// state file was saved with. It only reads guest memory.
func (m *Machine) checkFingerprint(f *state.File) error {
	if _, ok := f.Section(secFingerprint); !ok {
		return nil // saved before fingerprints
	}
	sec, err := f.Need(secFingerprint, recordVersion)
	if err != nil {
		return err
	}
	var rec fingerprintRecord
	if err := sec.DecodeJSON(&rec); err != nil {
		return err
	}
	if rec.Algorithm != fingerprintAlgorithm || rec.PageSize != fingerprintPageSize {
		return fmt.Errorf("its memory fingerprint is %q over %d-byte pages, which this pmvm does not compute (it computes %q over %d-byte pages)",
			rec.Algorithm, rec.PageSize, fingerprintAlgorithm, fingerprintPageSize)
	}
	start := time.Now()
	for _, b := range rec.Blocks {
		i := m.blockIndex(b.Block)
		if i < 0 {
			return fmt.Errorf("its memory fingerprint names block %q, which the config does not have", b.Block)
		}
		if got := fingerprint(m.regions[i].Mem, b.Pages); got != b.SHA256 {
			return fmt.Errorf("the memory did not survive: memory block %q (%s %s) does not hold what the guest was saved in (the %d pages sampled at save hash differently now), though it is the same backing; was this a cold reboot (the firmware cleared or reused the memory) instead of a kexec? The guest cannot be resumed from it; nothing ran, the guest's memory is untouched and the state file is left as it is",
				b.Block, m.regions[i].Kind, m.regions[i].Path, len(b.Pages))
		}
	}
	m.log.Debug().Dur("took", time.Since(start)).Msg("guest memory fingerprint matches")
	return nil
}

func (m *Machine) blockIndex(name string) int {
	for i, b := range m.cfg.Memory {
		if b.Name == name && i < len(m.regions) {
			return i
		}
	}
	return -1
}
