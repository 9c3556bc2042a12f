package kvm

import (
	"testing"

	"github.com/pmvm/pmvm/qa/labrun"
)

// TestMain runs these tests where a KVM host is: this machine's /dev/kvm,
// else a lab host (nested KVM under QEMU TCG); the first line says which.
func TestMain(m *testing.M) { labrun.Main(m, labrun.KVM) }
