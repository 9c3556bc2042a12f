package vmm

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm/acpi"
	"github.com/pmvm/pmvm/vmm/devices/acpipm"
)

// TestSuspendAndWakeAtTheFACSVector proves the S3 contract on /dev/kvm
// with a tiny guest: the S3 write to PM1a_CNT parks every vCPU and makes the
// machine suspended; Wake resets the boot vCPU into real mode at the FACS
// waking vector with WAK_STS set in PM1_STS; the resumed code runs, reports
// WAK_STS and powers off. The second vCPU stays waiting for SIPI throughout.
func TestSuspendAndWakeAtTheFACSVector(t *testing.T) {
	s3 := uint16(acpipm.SleepTypeS3)<<10 | 1<<13
	s5 := uint16(acpipm.SleepTypeS5)<<10 | 1<<13
	m, console := tinyMachine(t, []byte{
		0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'S', 0xee, // out 'S'
		0x66, 0xb8, byte(s3), byte(s3 >> 8), // mov ax, SLP_TYP=S3|SLP_EN
		0x66, 0xba, 0x04, 0x06, // mov dx, 0x604
		0x66, 0xef, // out dx, ax
		0xeb, 0xfe, // jmp $ (never reached if the vCPU is parked... or spins harmlessly)
	}, 2)

	// Play the OS: set the waking vector to real-mode code at 0x8000.
	const vector = 0x8000
	wake := []byte{
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'W', 0xee, // out 'W'
		0xba, 0x00, 0x06, // mov dx, 0x600 (PM1_STS)
		0xed,       // in ax, dx
		0x88, 0xe0, // mov al, ah
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xee,             // out dx, al (WAK_STS is bit 15)
		0xba, 0x04, 0x06, // mov dx, 0x604
		0xb8, byte(s5), byte(s5 >> 8), // mov ax, S5|SLP_EN
		0xef,       // out dx, ax
		0xeb, 0xfe, // jmp $
	}
	_, err := m.mem.WriteAt(wake, vector)
	require.NoError(t, err)
	var v [4]byte
	binary.LittleEndian.PutUint32(v[:], vector)
	_, err = m.mem.WriteAt(v[:], int64(m.tables.FACS+acpi.FACSFirmwareWakingVectorOffset))
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type result struct {
		o   Outcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		o, err := m.Run(ctx)
		done <- result{o, err}
	}()

	st, err := m.WaitRunState(ctx, StateSuspended)
	require.NoError(t, err)
	require.Equal(t, StateSuspended, st)
	require.Equal(t, "S", console.String())
	require.NoError(t, m.Wake("test"))
	require.ErrorContains(t, m.Wake("again"), "not suspended", "a running guest cannot be woken")
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, OutcomePowerOff.String(), r.o.String())
	require.Equal(t, "SW\x80", console.String(), "resumed at the vector and saw WAK_STS")
}
