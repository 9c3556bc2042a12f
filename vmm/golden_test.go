package vmm

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm/devices/acpipm"
	"github.com/pmvm/pmvm/vmm/devices/cmos"
	"github.com/pmvm/pmvm/vmm/devices/uart"
)

// goldenState is a state file written by Machine.SaveState before the
// platform table existed (testdata/README.md says how).
const goldenState = "testdata/pre-issue-11.pmvmstate"

// goldenConfig is the config the golden file was saved from (its backing
// path aside: backing identities are compared on the host, not here).
func goldenConfig() *configs.VM {
	return &configs.VM{Name: "golden", VCPUs: 2, Mode: memspec.ModeReboot,
		Memory: []configs.Memory{{Name: "ram0", Size: configs.Size(64 * mib), Shared: true, PreservedAcrossKexec: true}}}
}

func withoutTimer(v any) any {
	s := v.(acpipm.State)
	s.Timer = 0
	return s
}

// TestGoldenStateFileStillResumes proves, without KVM, that a state file
// written before the platform table passes every resume check that reads
// only the file (CheckIncoming's: mode, VM, machine record, fingerprint,
// runstate, memory and vCPU sections; the RAM layout rebuilt from the saved
// alignments), that its device sections and the bus's stateful devices are
// the same set, and that every device section decodes through the table
// into the models: the guest's programming is in them (COM1 IER/LCR/SCR,
// CMOS byte 0x0e), and each model saves back the record it was given. A
// save today writes the same sections in the same order.
func TestGoldenStateFileStillResumes(t *testing.T) {
	f, err := state.ReadFile(goldenState)
	require.NoError(t, err)
	cfg := goldenConfig()

	rec, saved, err := checkSaved(cfg, goldenState, f)
	require.NoError(t, err)
	require.Len(t, saved, 1)
	assert.Equal(t, uint64(64*mib), saved[0].Size)
	ram, err := placeRAM(cfg, []uint64{saved[0].Align})
	require.NoError(t, err)
	assert.Empty(t, ramLayoutDiff(cfg, rec.RAM, ram), "the RAM layout built today is the saved one")

	m := pureMachine(t, cfg)
	assert.Equal(t, rec.FACS, m.tables.FACS, "the ACPI tables are where the guest left its waking vector")
	assert.Equal(t, rec.RSDP, m.tables.RSDP)
	checkSectionsMatchTheBus(t, f, &m.bus)
	require.NoError(t, restoreDevices(f, m.devs))

	com1 := m.device(t, "uart@0x3f8").(*uart.UART).State()
	assert.Equal(t, [3]uint8{0x0f, 0x1b, 0x5a}, [3]uint8{com1.IER, com1.LCR, com1.SCR})
	rtc := m.device(t, "cmos@0x70").(*cmos.CMOS).State()
	assert.Equal(t, uint8(0x0e), rtc.Index)
	assert.Equal(t, uint8(0x42), rtc.RAM[0x0e])
	for _, d := range m.devs {
		if d.state == nil {
			continue
		}
		s, ok := f.Section(d.name())
		require.True(t, ok)
		got, err := json.Marshal(d.state.save())
		require.NoError(t, err)
		if d.kind == "acpi-pm" { // its timer ran on since the restore
			var want acpipm.State
			require.NoError(t, s.DecodeJSON(&want))
			assert.Equal(t, withoutTimer(want), withoutTimer(d.state.save()))
			continue
		}
		assert.JSONEq(t, string(s.Payload), string(got), "%s saves back what it was restored from", d.name())
	}

	// The sections a save writes today, in order (the golden file has the
	// memory section a machine without backings here cannot write).
	now, err := m.stateFile("test", 1, f.Header.Created)
	require.NoError(t, err)
	var goldenNames, nowNames []string
	for _, s := range f.Sections {
		if s.Name != memorySection("ram0") {
			goldenNames = append(goldenNames, s.Name)
		}
	}
	for _, s := range now.Sections {
		nowNames = append(nowNames, s.Name)
	}
	assert.Equal(t, goldenNames, nowNames)
	assert.Equal(t, f.Header.ConfigFingerprint, now.Header.ConfigFingerprint)
}
