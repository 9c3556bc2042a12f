package x86

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm/kvm"
)

// xsaveProblems checks leaf 0xD of leaves the way a Linux guest relies on
// it (fpu__init_system_xstate): the components 0xD.0 EAX/EDX lists are the
// ones it enables (less those whose feature leaf 1/7 hides: Linux drops
// those, and a VMM must not list them), each needs a sub-leaf with a size,
// and the size of the XSAVE area for them, from the sub-leaves' offsets and
// sizes, must be 0xD.0 ECX (and EBX once they are enabled: KVM computes
// EBX from the guest's XCR0 with the same sub-leaves; before, EBX is the
// size for XCR0 = x87). It returns what is wrong, nothing when all is well.
func xsaveProblems(leaves []kvm.CPUIDEntry) []string {
	var p []string
	bad := func(f string, a ...any) { p = append(p, fmt.Sprintf(f, a...)) }
	l := featuresOf(leaves)
	d0 := findLeaf(leaves, 0xd, 0)
	if l.ecx1&cpuid1ECXXSAVE == 0 {
		if d0 != nil {
			bad("leaf 1 hides XSAVE but leaf 0xD is there")
		}
		return p
	}
	if d0 == nil {
		return []string{"leaf 1 offers XSAVE but there is no leaf 0xD"}
	}
	listed := uint64(d0.EDX)<<32 | uint64(d0.EAX)
	if listed&3 != 3 {
		bad("0xD.0 lists XCR0 %#x without x87 and SSE", listed)
	}
	known := uint64(0)
	for _, c := range xsaveUserComponents {
		known |= c.bits
		if listed&c.bits == 0 {
			continue
		}
		if listed&c.bits != c.bits {
			bad("0xD.0 lists part of the %s components (%#x of %#x)", c.name, listed&c.bits, c.bits)
		}
		if !c.offered(l) {
			bad("0xD.0 lists the %s components (%#x) but leaf 1/7 hides %s", c.name, c.bits, c.name)
		}
	}
	if u := listed &^ known; u != 0 {
		bad("0xD.0 lists XCR0 bits %#x that no offered feature uses", u)
	}
	if !componentsSized(leaves, listed) {
		bad("0xD.0 lists XCR0 %#x but a sub-leaf of one of them is missing or has size 0", listed)
	}
	if want := xsaveSize(leaves, listed); d0.ECX != want {
		bad("0xD.0 ECX (XSAVE size of all offered components) is %d, the sub-leaves give %d for XCR0 %#x", d0.ECX, want, listed)
	}
	if d0.EBX != xsaveLegacySize {
		bad("0xD.0 EBX (XSAVE size for XCR0 at reset, x87) is %d, want %d", d0.EBX, xsaveLegacySize)
	}
	var xss uint64
	if d1 := findLeaf(leaves, 0xd, 1); d1 != nil {
		xss = uint64(d1.EDX)<<32 | uint64(d1.ECX)
		compacted := d1.EAX&(cpuidDEAXXSAVEC|cpuidDEAXXSAVES) != 0
		if compacted && d1.EBX != xsaveLegacySize {
			bad("0xD.1 EBX (compacted size at reset) is %d, want %d", d1.EBX, xsaveLegacySize)
		}
		if !compacted && d1.EBX != 0 {
			bad("0xD.1 EBX is %d without XSAVEC or XSAVES, want 0", d1.EBX)
		}
	}
	for _, e := range leaves {
		if e.Function == 0xd && e.Index >= 2 && e.Index < 64 && (listed|xss)&(1<<e.Index) == 0 {
			bad("0xD.%d describes component %d, which is not offered", e.Index, e.Index)
		}
	}
	return p
}

func requireXSaveConsistent(t *testing.T, leaves []kvm.CPUIDEntry) {
	t.Helper()
	require.Empty(t, xsaveProblems(leaves), "leaf 0xD as a guest sees it:\n%s", formatCPUIDTable(leaves))
}

// readCPUIDTable reads a table recorded by TestCPUIDOfThisKVMIsXSaveConsistent.
func readCPUIDTable(t *testing.T, path string) []kvm.CPUIDEntry {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []kvm.CPUIDEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		w := strings.Fields(line)
		require.Len(t, w, 7, "%s: %q", path, line)
		var v [7]uint32
		for i, s := range w {
			n, err := strconv.ParseUint(s, 0, 32)
			require.NoError(t, err, "%s: %q", path, line)
			v[i] = uint32(n)
		}
		out = append(out, kvm.CPUIDEntry{Function: v[0], Index: v[1], Flags: v[2], EAX: v[3], EBX: v[4], ECX: v[5], EDX: v[6]})
	}
	require.NoError(t, sc.Err())
	return out
}

// withLeaf1ECX returns a copy of leaves with leaf 1 ECX changed.
func withLeaf1ECX(leaves []kvm.CPUIDEntry, set, clear uint32) []kvm.CPUIDEntry {
	out := append([]kvm.CPUIDEntry(nil), leaves...)
	findLeaf(out, 1, 0).ECX = findLeaf(out, 1, 0).ECX&^clear | set
	return out
}

func leafD(leaves []kvm.CPUIDEntry) []uint32 {
	var idx []uint32
	for _, e := range leaves {
		if e.Function == 0xd {
			idx = append(idx, e.Index)
		}
	}
	return idx
}

// TestCPUIDXSaveOfTheLabHost: the lab host's KVM offers x87, SSE and AVX
// (0xD.0 EAX = 7, AVX at offset 576, 256 bytes): the guest sees them, with
// 832 bytes for all of them, as Linux computes.
func TestCPUIDXSaveOfTheLabHost(t *testing.T) {
	supported := readCPUIDTable(t, "testdata/cpuid-lab-epyc-tcg.txt")
	for _, ncpu := range []int{1, 2} {
		leaves := CPUID(supported, ncpu-1, ncpu)
		requireXSaveConsistent(t, leaves)
		assert.Equal(t, uint64(7), OfferedXCR0(leaves))
		d0 := findLeaf(leaves, 0xd, 0)
		assert.Equal(t, [3]uint32{7, 576, 832}, [3]uint32{d0.EAX, d0.EBX, d0.ECX})
		assert.Equal(t, []uint32{0, 1, 2}, leafD(leaves))
	}
	// AVX hidden (as a VMM might, or another CPU model): YMM goes too.
	noAVX := CPUID(withLeaf1ECX(supported, 0, cpuid1ECXAVX), 0, 1)
	requireXSaveConsistent(t, noAVX)
	assert.Equal(t, uint64(3), OfferedXCR0(noAVX))
	assert.Equal(t, []uint32{0, 1}, leafD(noAVX))
	assert.Equal(t, uint32(576), findLeaf(noAVX, 0xd, 0).ECX)
	assert.NotEmpty(t, xsaveProblems(withLeaf1ECX(supported, 0, cpuid1ECXAVX)), "the check must see AVX hidden but YMM listed")
}

// TestCPUIDXSaveOfTheBuildMachine: the build machine's kvm_pvm hides XSAVE,
// AVX and AVX-512 in leaves 1 and 7 but lists x87|SSE|AVX|AVX-512 (0xe7) in
// 0xD with their sub-leaves. Without XSAVE the guest gets no leaf 0xD;
// with it (a KVM that offered XSAVE but not AVX), only x87 and SSE.
func TestCPUIDXSaveOfTheBuildMachine(t *testing.T) {
	supported := readCPUIDTable(t, "testdata/cpuid-build-pvm-xeon.txt")
	leaves := CPUID(supported, 0, 2)
	requireXSaveConsistent(t, leaves)
	assert.Empty(t, leafD(leaves))
	assert.Zero(t, OfferedXCR0(leaves))

	xsave := withLeaf1ECX(supported, cpuid1ECXXSAVE, 0)
	raw := xsaveProblems(xsave)
	assert.NotEmpty(t, raw, "KVM's table as is lists AVX and AVX-512 state the leaves hide")
	t.Logf("KVM's table with XSAVE on, as is:\n\t%s", strings.Join(raw, "\n\t"))
	leaves = CPUID(xsave, 1, 2)
	requireXSaveConsistent(t, leaves)
	assert.Equal(t, uint64(3), OfferedXCR0(leaves))
	assert.Equal(t, []uint32{0, 1}, leafD(leaves))
	assert.Len(t, leaves, len(supported)-4, "sub-leaves 2, 5, 6, 7 dropped, nothing else")
}

// TestCPUIDXSaveKeepsTheOtherLeaves: normalising leaf 0xD changes nothing
// outside it.
func TestCPUIDXSaveKeepsTheOtherLeaves(t *testing.T) {
	for _, f := range []string{"testdata/cpuid-lab-epyc-tcg.txt", "testdata/cpuid-build-pvm-xeon.txt"} {
		supported := readCPUIDTable(t, f)
		var want, got []kvm.CPUIDEntry
		for _, e := range supported {
			if e.Function != 0xd {
				want = append(want, e)
			}
		}
		for _, e := range normaliseXSave(append([]kvm.CPUIDEntry(nil), supported...)) {
			if e.Function != 0xd {
				got = append(got, e)
			}
		}
		assert.Equal(t, want, got, f)
	}
}
