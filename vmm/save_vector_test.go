package vmm

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm/acpi"
)

// TestSaveRefusesAGuestThatCouldNotBeResumed proves the waking vector is
// checked before the state file is written, not first at the wake after
// a host update (where the guest would be lost): a suspended guest whose
// FACS waking vector pmvm cannot resume through is refused by
// CheckSaveable and SaveState with a message that says why, nothing is
// written, and the machine stays suspended.
func TestSaveRefusesAGuestThatCouldNotBeResumed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offset uint64
		size   int
		value  uint64
		want   string
	}{
		{"no waking vector", acpi.FACSFirmwareWakingVectorOffset, 4, 0, "waking vector is 0"},
		{"above 1 MiB", acpi.FACSFirmwareWakingVectorOffset, 4, 0x100000, "waking vector is 0x100000"},
		{"a 64-bit waking vector", acpi.FACSXFirmwareWakingVectorOffset, 8, 0x1000000, "64-bit waking vector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			m, done := suspendedMachine(t, ctx)
			b := make([]byte, 8)
			binary.LittleEndian.PutUint64(b, tc.value)
			_, err := m.mem.WriteAt(b[:tc.size], int64(m.tables.FACS+tc.offset))
			require.NoError(t, err)
			path := filepath.Join(t.TempDir(), "tiny.state")

			err = m.CheckSaveable(path)
			require.Error(t, err, "CheckSaveable of a suspended guest looks at its waking vector")
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "could not be resumed")
			err = m.SaveState(path, "test")
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "nothing was written")
			_, statErr := os.Stat(path)
			assert.ErrorIs(t, statErr, os.ErrNotExist, "no state file for a guest that could not be resumed from it")
			assert.Equal(t, StateSuspended, m.RunState())
			m.Stop()
			<-done
		})
	}
}
