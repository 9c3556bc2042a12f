package bench

import (
	"testing"

	"github.com/pmvm/pmvm/qa/labrun"
	"github.com/pmvm/pmvm/state/statetest"
)

// TestMain runs the benchmarks where a KVM host and QEMU are: this
// machine's /dev/kvm, else a lab host (nested KVM under QEMU TCG) where
// pmvm and QEMU run side by side on the same nested KVM. The first line
// says which; absolute times in the lab mean little, the pmvm/QEMU ratios
// of one run do (make bench's report prints both). Memory generation
// records go to a temporary directory, not the host's.
func TestMain(m *testing.M) {
	labrun.Main(statetest.WithTempGenerationDir(m), labrun.KVM, labrun.QEMU)
}
