package vmm

import (
	"fmt"
	"os"
	"testing"

	"github.com/pmvm/pmvm/qa/labrun"
	"github.com/pmvm/pmvm/state"
)

// TestMain runs these tests where a KVM host is: this machine's /dev/kvm,
// else a lab host (nested KVM under QEMU TCG); the first line says which.
func TestMain(m *testing.M) { labrun.Main(withGenerationDir{m}, labrun.KVM) }

// withGenerationDir keeps the tests' memory generation records (package
// state) out of the host's /var/lib/pmvm/generations.
type withGenerationDir struct{ m *testing.M }

func (w withGenerationDir) Run() int {
	dir, err := os.MkdirTemp("", "pmvm-generations-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "generation dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	state.GenerationDir = dir
	return w.m.Run()
}
