package vmm

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestSamplePagesPrefersWrittenPages proves the sample is drawn from the
// pages a guest wrote (so that a scrub to zeros changes the hash even when
// most of the memory was never touched), that a full walk visits each page
// once, that all-zero memory is sampled too, and that the hash covers each
// page's index and bytes.
func TestSamplePagesPrefersWrittenPages(t *testing.T) {
	const pages = 1000
	mem := make([]byte, pages*fingerprintPageSize)
	written := map[uint64]bool{3: true, 500: true, 999: true}
	for i := range written {
		mem[i*fingerprintPageSize+100] = 0x5a
	}
	got := samplePages(mem, 10, pages)
	assert.ElementsMatch(t, []uint64{3, 500, 999}, got, "every written page is found, and only those")

	got = samplePages(make([]byte, pages*fingerprintPageSize), pages, pages)
	seen := map[uint64]bool{}
	for _, i := range got {
		assert.False(t, seen[i], "page %d visited twice", i)
		seen[i] = true
	}
	assert.Len(t, seen, pages, "all-zero memory: every page, each once")

	sum := fingerprint(mem, []uint64{3, 500})
	assert.Equal(t, sum, fingerprint(mem, []uint64{3, 500}))
	assert.NotEqual(t, sum, fingerprint(mem, []uint64{500, 3}), "the index is hashed with the page")
	assert.Empty(t, fingerprint(mem, []uint64{pages}), "a page beyond the block never matches")
	mem[500*fingerprintPageSize+4095] ^= 1
	assert.NotEqual(t, sum, fingerprint(mem, []uint64{3, 500}))
}

// TestSamplePagesIsQuickOnLargeMemory proves the sample's cost does not
// grow with memory: on 64GiB of untouched (sparse) memory it visits at
// most fingerprintVisits pages.
func TestSamplePagesIsQuickOnLargeMemory(t *testing.T) {
	const size = 64 << 30
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	require.NoError(t, err)
	defer unix.Munmap(mem)
	start := time.Now()
	pages := samplePages(mem, fingerprintPages, fingerprintVisits)
	took := time.Since(start)
	t.Logf("sampled 64GiB in %v", took)
	assert.Len(t, pages, fingerprintPages, "all zero: the pages visited first")
	assert.Less(t, took, 2*time.Second)
}
