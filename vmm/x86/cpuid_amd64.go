package x86

import "github.com/pmvm/pmvm/vmm/kvm"

// CPUID bits pmvm changes.
const (
	cpuid1ECXHypervisor   = 1 << 31
	cpuid1EDXHTT          = 1 << 28
	cpuidExt1ECXCmpLegacy = 1 << 1
)

// CPUID returns the leaves vCPU id (its APIC id) of an ncpu machine sees:
// KVM's supported set, with the topology described as ncpu cores of one
// socket, one thread each, the hypervisor bit set, and leaf 0xD (XSAVE)
// consistent with the features offered (see normaliseXSave).
func CPUID(supported []kvm.CPUIDEntry, id, ncpu int) []kvm.CPUIDEntry {
	out := make([]kvm.CPUIDEntry, len(supported))
	copy(out, supported)
	out = normaliseXSave(out)
	coreBits := uint32(0)
	for 1<<coreBits < ncpu {
		coreBits++
	}
	for i := range out {
		e := &out[i]
		switch e.Function {
		case 1:
			e.EBX = e.EBX&0x0000ffff | uint32(id)<<24 | uint32(ncpu)<<16
			e.ECX |= cpuid1ECXHypervisor
			if ncpu > 1 {
				e.EDX |= cpuid1EDXHTT
			} else {
				e.EDX &^= cpuid1EDXHTT
			}
		case 0xb, 0x1f:
			// Extended topology: level 0 = SMT (1 thread), level 1 = core.
			e.EDX = uint32(id)
			switch e.Index {
			case 0:
				e.EAX, e.EBX, e.ECX = 0, 1, 1<<8
			case 1:
				e.EAX, e.EBX, e.ECX = coreBits, uint32(ncpu), 2<<8|1
			default:
				e.EAX, e.EBX, e.ECX = 0, 0, e.Index
			}
		case 0x80000001:
			if ncpu > 1 {
				e.ECX |= cpuidExt1ECXCmpLegacy
			}
		case 0x80000008:
			// AMD: NC (cores - 1) and the APIC id bits used for the core.
			e.ECX = e.ECX&^0xf0ff | coreBits<<12 | uint32(ncpu-1)
		case 0x8000001e:
			// AMD: extended APIC id, compute unit = core, one node.
			e.EAX = uint32(id)
			e.EBX = uint32(id) & 0xff
			e.ECX = 0
		}
	}
	return out
}
