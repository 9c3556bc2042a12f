package configs

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/pmvm/pmvm/pmem/memspec"
)

func spec() MachineSpec {
	return MachineSpec{VCPUs: 2, Mode: memspec.ModeReboot, Memory: []MemoryShape{{Name: "ram0", Size: Size(512 * memspec.MiB)}}}
}

// TestMachineDiffExplainsEachField proves every machine-defining difference
// is named with both values, and identical specs have none.
func TestMachineDiffExplainsEachField(t *testing.T) {
	assert.Empty(t, spec().Diff(spec()))
	assert.Equal(t, spec().Fingerprint(), spec().Fingerprint())

	other := spec()
	other.VCPUs = 4
	other.Memory = []MemoryShape{{Name: "ram0", Size: Size(1024 * memspec.MiB)}, {Name: "ram1", Size: Size(2 * memspec.MiB)}}
	d := spec().Diff(other)
	assert.Equal(t, []string{
		"vcpus: saved machine has 2, config has 4",
		`memory[0] "ram0": saved size 512MiB, config size 1GiB`,
		`memory[1]: config adds block "ram1" (2MiB), the saved machine had none`,
	}, d)
	assert.NotEqual(t, spec().Fingerprint(), other.Fingerprint())

	renamed := spec()
	renamed.Memory[0].Name = "main"
	renamed.Mode = memspec.ModeRestart
	assert.Equal(t, []string{
		`mode: saved machine is "reboot", config is "restart"`,
		`memory[0]: saved block is named "ram0", config names it "main"`,
	}, spec().Diff(renamed))
	assert.Len(t, renamed.Diff(MachineSpec{VCPUs: 2, Mode: memspec.ModeRestart}), 1)
}

// TestMachineIgnoresHostSideFields proves paths of sockets, logs, the kernel
// and the command line do not change the fingerprint.
func TestMachineIgnoresHostSideFields(t *testing.T) {
	a := &VM{Name: "a", VCPUs: 2, Mode: memspec.ModeReboot, Memory: []Memory{{Name: "ram0", Size: Size(512 * memspec.MiB), Backing: "/dev/dax0.0"}}}
	b := *a
	b.Boot = Boot{Kernel: "/other/vmlinuz", Cmdline: "quiet"}
	b.Control.Socket = "/run/other.sock"
	b.Memory = []Memory{{Name: "ram0", Size: Size(512 * memspec.MiB), Backing: "/dev/dax1.0"}}
	assert.Equal(t, a.Machine().Fingerprint(), b.Machine().Fingerprint())
}
