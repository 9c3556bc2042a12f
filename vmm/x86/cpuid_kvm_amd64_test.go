package x86

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm/kvm"
)

// TestCPUIDOfThisKVMIsXSaveConsistent normalises the CPUID table this host's
// KVM offers and checks leaf 0xD against what Linux checks at boot. It logs
// the table in the format of testdata/cpuid-*.txt, so a table of a new host
// can be recorded with go test -v -run this.
func TestCPUIDOfThisKVMIsXSaveConsistent(t *testing.T) {
	sys, err := kvm.OpenSystem()
	require.NoError(t, err)
	defer sys.Close()
	supported, err := sys.SupportedCPUID()
	require.NoError(t, err)
	t.Logf("KVM_GET_SUPPORTED_CPUID:\n%s", formatCPUIDTable(supported))
	for _, ncpu := range []int{1, 2} {
		for id := 0; id < ncpu; id++ {
			requireXSaveConsistent(t, CPUID(supported, id, ncpu))
		}
	}
}

func formatCPUIDTable(es []kvm.CPUIDEntry) string {
	var b strings.Builder
	b.WriteString("# function index flags eax ebx ecx edx\n")
	for _, e := range es {
		fmt.Fprintf(&b, "%#08x %#x %#x %#08x %#08x %#08x %#08x\n", e.Function, e.Index, e.Flags, e.EAX, e.EBX, e.ECX, e.EDX)
	}
	return b.String()
}
