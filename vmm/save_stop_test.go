package vmm

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm/acpi"
	"github.com/pmvm/pmvm/vmm/devices/acpipm"
)

// suspendedMachine runs a tiny guest that sets a real-mode waking vector
// and enters S3, and returns the machine once it is suspended, with Run's
// result on done.
func suspendedMachine(t *testing.T, ctx context.Context) (*Machine, <-chan Outcome) {
	t.Helper()
	s3 := uint16(acpipm.SleepTypeS3)<<10 | 1<<13
	m, _ := tinyMachineWith(t, []byte{
		0x66, 0xb8, byte(s3), byte(s3 >> 8), // mov ax, SLP_TYP=S3|SLP_EN
		0x66, 0xba, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
		0x66, 0xef, // out dx, ax
		0xeb, 0xfe, // jmp $
	}, 1, saveable(t))
	var v [4]byte
	binary.LittleEndian.PutUint32(v[:], 0x8000)
	_, err := m.mem.WriteAt(v[:], int64(m.tables.FACS+acpi.FACSFirmwareWakingVectorOffset))
	require.NoError(t, err)
	done := make(chan Outcome, 1)
	go func() {
		o, err := m.Run(ctx)
		assert.NoError(t, err)
		done <- o
	}()
	_, err = m.WaitRunState(ctx, StateSuspended)
	require.NoError(t, err)
	return m, done
}

// saveable makes a tiny machine's config one a state file can be saved
// for: mode reboot on a /dev/shm file its operator vouches for.
func saveable(t *testing.T) func(*configs.VM) {
	backing := fmt.Sprintf("/dev/shm/pmvm-vmm-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	t.Cleanup(func() { os.Remove(backing) })
	return func(cfg *configs.VM) {
		cfg.Mode = memspec.ModeReboot
		cfg.Memory[0].Backing, cfg.Memory[0].Create, cfg.Memory[0].PreservedAcrossKexec = backing, true, true
	}
}

// TestStopDuringSaveDoesNotPanic proves that `pmvm stop` (Stop) or SIGTERM
// (Run's context cancelled) arriving while the state file is being written
// ends the machine once: the save completes, Finish after it does nothing
// more, and no runstate move leaves "stopping" (before the fix the second
// stop closed the stopping channel again and pmvm panicked).
func TestStopDuringSaveDoesNotPanic(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(m *Machine, cancel context.CancelFunc)
	}{
		{"stop command", func(m *Machine, _ context.CancelFunc) { m.Stop() }},
		{"SIGTERM", func(m *Machine, cancel context.CancelFunc) {
			cancel()
			for !m.isStopping() { // Run's goroutine sees the context end
				time.Sleep(time.Millisecond)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runCtx, cancelRun := context.WithCancel(context.Background())
			defer cancelRun()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			m, done := suspendedMachine(t, runCtx)
			m.writeStateFile = func(path string, f *state.File) error {
				tc.stop(m, cancelRun)
				return state.WriteFile(path, f)
			}
			path := filepath.Join(t.TempDir(), "tiny.state")
			require.NoError(t, m.SaveState(path, "test"), "the state file is written in full even if a stop arrives meanwhile")
			m.Finish()
			m.Stop()
			select {
			case o := <-done:
				assert.Equal(t, OutcomeStopped.String(), o.String(), "the first reason to stop wins")
			case <-ctx.Done():
				t.Fatal("Run did not return")
			}
			assert.Equal(t, StateStopped, m.RunState())
			_, err := os.Stat(path)
			assert.NoError(t, err)
		})
	}
}
