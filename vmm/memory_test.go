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
	"github.com/pmvm/pmvm/vmm/x86"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// TestRAMLayoutDiffCatchesTheOldPackedLayout proves the case the alignment
// rule creates: a guest saved by a pmvm that packed a 1 GiB-aligned block
// right after a 512 MiB one (at 512 MiB) does not match the layout built
// now (at 1 GiB), and the refusal names the slot, both addresses and what
// to do.
func TestRAMLayoutDiffCatchesTheOldPackedLayout(t *testing.T) {
	cfg := &configs.VM{Name: "vm", Memory: []configs.Memory{{Name: "ram0", Size: 512 * mib}, {Name: "huge", Size: gib}}}
	old := []x86.RAMRange{{Block: 0, Size: 512 * mib}, {Block: 1, GuestPhys: 512 * mib, Size: gib}}
	now, err := placeRAM(cfg, []uint64{2 * mib, gib})
	require.NoError(t, err)
	require.Equal(t, uint64(gib), now[1].GuestPhys)

	diff := ramLayoutDiff(cfg, old, now)
	require.Equal(t, []string{`slot 1: saved block "huge" bytes 0x0-0x40000000 at guest-physical 0x20000000-0x60000000, now block "huge" bytes 0x0-0x40000000 at guest-physical 0x40000000-0x80000000`}, diff)
	msg := layoutRefusal(diff)
	assert.Contains(t, msg, "differs from the one the guest was saved with")
	assert.Contains(t, msg, "resume it with the pmvm version that saved it")

	assert.Empty(t, ramLayoutDiff(cfg, now, now))
	assert.Len(t, ramLayoutDiff(cfg, now[:1], now), 1, "a missing slot is a difference")
	assert.Len(t, ramLayoutDiff(cfg, now, now[:1]), 1, "an extra slot is a difference")

	_, err = placeRAM(cfg, []uint64{2 * mib})
	assert.Error(t, err, "one alignment per block")
}

// TestCheckIncomingComparesTheRAMLayout proves resume compares the saved
// RAM ranges with the layout built now, before anything is mapped: a state
// file whose layout matches is accepted, one whose block sits elsewhere is
// refused with the layout message (the config and the memory being the
// same, nothing else would catch it).
func TestCheckIncomingComparesTheRAMLayout(t *testing.T) {
	dir := t.TempDir()
	cfg := &configs.VM{Name: "vm", VCPUs: 1, Mode: memspec.ModeReboot}
	for _, b := range []struct {
		name string
		size uint64
	}{{"ram0", 64 * mib}, {"ram1", 128 * mib}} {
		path := filepath.Join(dir, b.name)
		f, err := os.Create(path)
		require.NoError(t, err)
		require.NoError(t, f.Truncate(int64(b.size)))
		require.NoError(t, f.Close())
		cfg.Memory = append(cfg.Memory, configs.Memory{Name: b.name, Size: configs.Size(b.size), Backing: path, Shared: true})
	}
	aligns := make([]uint64, len(cfg.Memory))
	ids := make([]pmem.Identity, len(cfg.Memory))
	for i, spec := range MemorySpecs(cfg) {
		b, err := pmem.Probe(spec)
		require.NoError(t, err)
		aligns[i], ids[i] = b.Align, b.Identity
	}
	now, err := placeRAM(cfg, aligns)
	require.NoError(t, err)

	write := func(ram []x86.RAMRange) string {
		f := &state.File{Header: state.Header{Created: time.Now(), PMVMVersion: "test", VMName: cfg.Name,
			Mode: memspec.ModeReboot, ConfigFingerprint: cfg.Machine().Fingerprint()}}
		require.NoError(t, f.AddJSON(secMachine, recordVersion, machineRecord{Platform: Platform, Spec: cfg.Machine(), RAM: ram, RunState: StateSuspended}))
		for i, m := range cfg.Memory {
			require.NoError(t, f.AddJSON(memorySection(m.Name), recordVersion, ids[i]))
		}
		path := filepath.Join(t.TempDir(), "vm.state")
		require.NoError(t, state.WriteFile(path, f))
		return path
	}

	in, err := CheckIncoming(cfg, write(now), nil)
	require.NoError(t, err, "the same layout resumes")
	assert.Equal(t, now, in.rec.RAM)

	moved := append([]x86.RAMRange(nil), now...)
	moved[1].GuestPhys = gib
	_, err = CheckIncoming(cfg, write(moved), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `cannot resume VM "vm": the guest-physical RAM layout this pmvm builds for the config differs`)
	assert.Contains(t, err.Error(), `slot 1: saved block "ram1" bytes 0x0-0x8000000 at guest-physical 0x40000000-0x48000000, now block "ram1" bytes 0x0-0x8000000 at guest-physical 0x4000000-0xc000000`)
	assert.Contains(t, err.Error(), "nothing was mapped, the guest's memory is untouched")
}

// TestRestoreRefusesAnotherRAMLayout proves Restore checks the saved RAM
// ranges against the machine New built (a second guard behind
// CheckIncoming), before any device state is touched.
func TestRestoreRefusesAnotherRAMLayout(t *testing.T) {
	m, _ := tinyMachine(t, []byte{0xeb, 0xfe}, 1)
	require.Equal(t, StateCreated, m.Status().RunState, "not run yet: Restore accepts it")
	moved := append([]x86.RAMRange(nil), m.ram...)
	moved[0].Size -= 2 * mib
	err := m.Restore(&Incoming{Path: "vm.state", rec: machineRecord{RAM: moved}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot restore vm.state: the guest-physical RAM layout")
	assert.Equal(t, StateCreated, m.Status().RunState)
}
