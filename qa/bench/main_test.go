package bench

import (
	"testing"

	"github.com/pmvm/pmvm/qa/labrun"
)

// TestMain runs the benchmarks where a KVM host and QEMU are: this
// machine's /dev/kvm, else a lab host (nested KVM under QEMU TCG) where
// pmvm and QEMU run side by side on the same nested KVM. The first line
// says which; absolute times in the lab mean little, the pmvm/QEMU ratios
// of one run do (make bench's report prints both).
func TestMain(m *testing.M) { labrun.Main(m, labrun.KVM, labrun.QEMU) }
