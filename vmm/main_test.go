package vmm

import (
	"testing"

	"github.com/pmvm/pmvm/qa/labrun"
	"github.com/pmvm/pmvm/state/statetest"
)

// TestMain runs these tests where a KVM host is: this machine's /dev/kvm,
// else a lab host (nested KVM under QEMU TCG); the first line says which.
func TestMain(m *testing.M) { labrun.Main(statetest.WithTempGenerationDir(m), labrun.KVM) }
