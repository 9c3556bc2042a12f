package vmm

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/state"
)

// TestCheckIncomingVCPUSections proves the vcpu/N sections are checked
// against the machine being resumed: all of them as a reboot-mode save
// writes them resume, and so does a file without any (written before they
// existed, for the same reset vCPUs); missing, extra or different ones are
// refused, naming the section.
func TestCheckIncomingVCPUSections(t *testing.T) {
	dir := t.TempDir()
	backing := filepath.Join(dir, "ram0")
	f, err := os.Create(backing)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(64*mib))
	require.NoError(t, f.Close())
	cfg := &configs.VM{Name: "vm", VCPUs: 2, Mode: memspec.ModeReboot,
		Memory: []configs.Memory{{Name: "ram0", Size: 64 * mib, Backing: backing, Shared: true}}}
	b, err := pmem.Probe(MemorySpecs(cfg)[0])
	require.NoError(t, err)
	ram, err := placeRAM(cfg, []uint64{b.Align})
	require.NoError(t, err)

	write := func(vcpus []vcpuRecord) string {
		sf := &state.File{Header: state.Header{Created: time.Now(), PMVMVersion: "test", VMName: cfg.Name,
			Mode: memspec.ModeReboot, ConfigFingerprint: cfg.Machine().Fingerprint()}}
		require.NoError(t, sf.AddJSON(secMachine, recordVersion, machineRecord{Platform: Platform, Spec: cfg.Machine(), RAM: ram, RunState: StateSuspended}))
		require.NoError(t, sf.AddJSON(memorySection("ram0"), recordVersion, b.Identity))
		for i, v := range vcpus {
			require.NoError(t, sf.AddJSON(vcpuSection(i), recordVersion, v))
		}
		path := filepath.Join(t.TempDir(), "vm.state")
		require.NoError(t, state.WriteFile(path, sf))
		return path
	}
	good := vcpuRecords(2)
	assert.Equal(t, vcpuRecord{APICID: 0, Boot: true, State: vcpuBootState}, good[0])
	assert.Equal(t, vcpuRecord{APICID: 1, Boot: false, State: vcpuOtherState}, good[1])
	notBoot := append([]vcpuRecord(nil), good...)
	notBoot[0].Boot = false

	for _, c := range []struct {
		name  string
		vcpus []vcpuRecord
		want  string // "" = accepted
	}{
		{"as saved", good, ""},
		{"none (older file)", nil, ""},
		{"one missing", good[:1], "it has vCPU sections vcpu/0..vcpu/0 but the machine has 2 vCPUs"},
		{"one extra", append(append([]vcpuRecord(nil), good...), vcpuRecord{APICID: 2, State: vcpuOtherState}), "it has section vcpu/2 but the machine has 2 vCPUs"},
		{"different", notBoot, "section vcpu/0 is"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := CheckIncoming(cfg, write(c.vcpus), nil)
			if c.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), "nothing was mapped")
		})
	}
}
