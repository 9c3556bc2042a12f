package x86

import (
	"fmt"

	"github.com/pmvm/pmvm/vmm/kvm"
)

// Leaf 0xD (XSAVE) made consistent with the features pmvm offers, as QEMU,
// Firecracker and cloud-hypervisor do: an XSAVE state component is offered
// (its XCR0 bit in 0xD.0 EAX/EDX, its sub-leaf) only when the feature that
// uses it is offered in leaf 1 or 7, the sizes in 0xD.0 EBX/ECX are the
// sizes of what is offered, and a sub-leaf of a component not offered is
// gone. Linux compares the size it computes from the sub-leaves of the
// components it enables with CPUID 0xD.0 EBX (0xD.1 EBX when it uses the
// compacted format); a mismatch is a WARNING that taints the guest.

const (
	cpuid1ECXXSAVE  = 1 << 26
	cpuid1ECXAVX    = 1 << 28
	cpuid7EBXMPX    = 1 << 14
	cpuid7EBXAVX512 = 1 << 16
	cpuid7ECXPKU    = 1 << 3
	cpuid7EDXAMX    = 1 << 24

	cpuidDEAXXSAVEC = 1 << 1
	cpuidDEAXXSAVES = 1 << 3

	// xsaveLegacySize is the legacy (FXSAVE) area and the XSAVE header: the
	// size of an XSAVE area with only x87 and SSE enabled.
	xsaveLegacySize = 512 + 64
	// xcr0X87 is XCR0 at reset, the value KVM computes 0xD.0 EBX for until
	// the guest's first XSETBV.
	xcr0X87 = 1 << 0
)

// xsaveUserComponents are the XCR0 components pmvm knows, each with the
// leaf 1/7 feature that uses it. A component not listed (a newer one) is
// not offered: pmvm cannot tell whether its feature is.
var xsaveUserComponents = []struct {
	bits    uint64
	name    string
	offered func(l featureLeaves) bool
}{
	{1<<0 | 1<<1, "x87, SSE", func(l featureLeaves) bool { return true }},
	{1 << 2, "AVX", func(l featureLeaves) bool { return l.ecx1&cpuid1ECXAVX != 0 }},
	{1<<3 | 1<<4, "MPX", func(l featureLeaves) bool { return l.ebx7&cpuid7EBXMPX != 0 }},
	{1<<5 | 1<<6 | 1<<7, "AVX-512", func(l featureLeaves) bool { return l.ebx7&cpuid7EBXAVX512 != 0 }},
	{1 << 9, "PKU", func(l featureLeaves) bool { return l.ecx7&cpuid7ECXPKU != 0 }},
	{1<<17 | 1<<18, "AMX", func(l featureLeaves) bool { return l.edx7&cpuid7EDXAMX != 0 }},
}

// featureLeaves are the leaf 1 and 7.0 registers that say which features
// are offered.
type featureLeaves struct{ ecx1, ebx7, ecx7, edx7 uint32 }

func featuresOf(leaves []kvm.CPUIDEntry) featureLeaves {
	var l featureLeaves
	if e := findLeaf(leaves, 1, 0); e != nil {
		l.ecx1 = e.ECX
	}
	if e := findLeaf(leaves, 7, 0); e != nil {
		l.ebx7, l.ecx7, l.edx7 = e.EBX, e.ECX, e.EDX
	}
	return l
}

func findLeaf(leaves []kvm.CPUIDEntry, function, index uint32) *kvm.CPUIDEntry {
	for i := range leaves {
		e := &leaves[i]
		if e.Function == function && (e.Flags&kvm.CPUIDFlagSignificantIndex == 0 || e.Index == index) {
			return e
		}
	}
	return nil
}

// OfferedXCR0 is the XCR0 a guest may enable with leaves: the components
// 0xD.0 EAX/EDX lists, whose feature is offered and whose sub-leaf gives a
// size; 0 when leaf 1 does not offer XSAVE.
func OfferedXCR0(leaves []kvm.CPUIDEntry) uint64 {
	l := featuresOf(leaves)
	d0 := findLeaf(leaves, 0xd, 0)
	if l.ecx1&cpuid1ECXXSAVE == 0 || d0 == nil {
		return 0
	}
	listed := uint64(d0.EDX)<<32 | uint64(d0.EAX)
	var xcr0 uint64
	for _, c := range xsaveUserComponents {
		if listed&c.bits == c.bits && c.offered(l) && componentsSized(leaves, c.bits) {
			xcr0 |= c.bits
		}
	}
	return xcr0
}

// componentsSized reports whether every component in bits above SSE has a
// sub-leaf with a non-zero size.
func componentsSized(leaves []kvm.CPUIDEntry, bits uint64) bool {
	for i := uint32(2); i < 64; i++ {
		if bits&(1<<i) == 0 {
			continue
		}
		if e := findLeaf(leaves, 0xd, i); e == nil || e.EAX == 0 {
			return false
		}
	}
	return true
}

// xsaveSize is the size of a standard-format XSAVE area holding the
// components in xcr0: the end of the furthest component, at least the
// legacy area and header. It is what Linux computes from the sub-leaves.
func xsaveSize(leaves []kvm.CPUIDEntry, xcr0 uint64) uint32 {
	size := uint32(xsaveLegacySize)
	for i := uint32(2); i < 64; i++ {
		if xcr0&(1<<i) == 0 {
			continue
		}
		if e := findLeaf(leaves, 0xd, i); e != nil && e.EBX+e.EAX > size {
			size = e.EBX + e.EAX
		}
	}
	return size
}

// normaliseXSave rewrites leaf 0xD of leaves (a copy the caller owns) to
// offer exactly OfferedXCR0 and the supervisor components KVM lists in
// 0xD.1 ECX/EDX, and drops the sub-leaves of everything else.
func normaliseXSave(leaves []kvm.CPUIDEntry) []kvm.CPUIDEntry {
	xcr0 := OfferedXCR0(leaves)
	if xcr0 == 0 {
		// No XSAVE offered: a guest never reads leaf 0xD.
		out := leaves[:0]
		for _, e := range leaves {
			if e.Function != 0xd {
				out = append(out, e)
			}
		}
		return out
	}
	var xss uint64
	if d1 := findLeaf(leaves, 0xd, 1); d1 != nil {
		xss = uint64(d1.EDX)<<32 | uint64(d1.ECX)
	}
	out := leaves[:0]
	for _, e := range leaves {
		if e.Function == 0xd {
			switch {
			case e.Index == 0:
				e.EAX, e.EDX = uint32(xcr0), uint32(xcr0>>32)
				// EBX is the size for the XCR0 enabled now (KVM keeps
				// it current); ECX the size for all that is offered.
				e.EBX = xsaveSize(leaves, xcr0X87)
				e.ECX = xsaveSize(leaves, xcr0)
			case e.Index == 1:
				if e.EAX&(cpuidDEAXXSAVEC|cpuidDEAXXSAVES) != 0 {
					e.EBX = xsaveLegacySize // compacted size for XCR0|XSS at reset; KVM keeps it current
				} else {
					e.EBX = 0
				}
			case e.Index < 64 && (xcr0|xss)&(1<<e.Index) == 0:
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// SetBootXCR0 sets the vCPU's XCR0 to every component leaves offer (see
// OfferedXCR0), the value a guest enables at boot. The guest sets XCR0
// itself; this makes CPUID 0xD.0 EBX, which KVM computes from the XCR0 it
// knows, already right for it. That matters where KVM does not see the
// guest's XSETBV: nested under QEMU TCG, whose XSETBV (helper_xsetbv in
// target/i386/tcg/fpu_helper.c) checks no SVM intercept, KVM kept the size
// for XCR0 = x87 (576) and every Linux guest in the lab warned "XSAVE
// consistency problem: size 832 != kernel_size 576" (and ran with XCR0 = x87
// after every exit, as KVM loaded the XCR0 it knew).
// TestGuestSeesXSaveSizeOfItsXCR0 shows it.
func SetBootXCR0(c *kvm.VCPU, leaves []kvm.CPUIDEntry) error {
	xcr0 := OfferedXCR0(leaves)
	if xcr0 == 0 {
		return nil
	}
	if err := c.SetXCR0(xcr0); err != nil {
		return fmt.Errorf("setting the boot XCR0 %#x (the XSAVE components CPUID leaf 0xD offers): %w", xcr0, err)
	}
	return nil
}
