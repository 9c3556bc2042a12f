package vmm

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm/acpi"
	"github.com/pmvm/pmvm/vmm/devices/acpipm"
)

// TestSuspendAndWakeAtTheFACSVector proves the S3 contract on /dev/kvm
// with a tiny guest: the S3 write to PM1a_CNT parks every vCPU and makes the
// machine suspended; Wake resets the boot vCPU into real mode at the FACS
// waking vector with WAK_STS set in PM1_STS; the resumed code runs, reports
// WAK_STS and powers off. The second vCPU stays waiting for SIPI throughout.
// s3Guest is a tiny guest that prints 'S' and enters S3; woken, it runs
// real-mode code at the FACS waking vector that prints 'W' and PM1_STS's
// high byte (WAK_STS is its bit 7) and powers off.
func s3Guest(t *testing.T) (*Machine, *syncBuffer) {
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

	return m, console
}

func TestSuspendAndWakeAtTheFACSVector(t *testing.T) {
	m, console := s3Guest(t)
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

// TestGuestReachingS3AfterAnAbandonedSuspendIsWoken proves finding 6 of
// issue 12: once a suspend pmvm asked for is given up on, a guest that
// still reaches S3 (late) is woken at once rather than left asleep with
// nothing to wake it; a guest already in S3 when the suspend is given up
// on is woken too; and a suspend asked for again keeps the guest in S3.
func TestGuestReachingS3AfterAnAbandonedSuspendIsWoken(t *testing.T) {
	run := func(t *testing.T, m *Machine) (context.Context, <-chan Outcome) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		done := make(chan Outcome, 1)
		go func() {
			o, err := m.Run(ctx)
			assert.NoError(t, err)
			done <- o
		}()
		return ctx, done
	}
	t.Run("late S3 after the suspend was given up on", func(t *testing.T) {
		m, console := s3Guest(t)
		m.WakeOnSuspend(true, "the test's suspend timed out")
		_, done := run(t, m)
		require.Equal(t, OutcomePowerOff.String(), (<-done).String())
		require.Equal(t, "SW\x80", console.String(), "woken at the vector without anyone calling Wake")
	})
	t.Run("already in S3 when the suspend is given up on", func(t *testing.T) {
		m, console := s3Guest(t)
		ctx, done := run(t, m)
		_, err := m.WaitRunState(ctx, StateSuspended)
		require.NoError(t, err)
		m.WakeOnSuspend(true, "the test's suspend timed out")
		require.Equal(t, OutcomePowerOff.String(), (<-done).String())
		require.Equal(t, "SW\x80", console.String())
	})
	t.Run("a suspend asked for again stays in S3", func(t *testing.T) {
		m, console := s3Guest(t)
		m.WakeOnSuspend(true, "an earlier suspend timed out")
		m.WakeOnSuspend(false, "")
		ctx, done := run(t, m)
		_, err := m.WaitRunState(ctx, StateSuspended)
		require.NoError(t, err)
		time.Sleep(200 * time.Millisecond) // a wrong wake would have started by now
		require.Equal(t, StateSuspended, m.RunState())
		require.Equal(t, "S", console.String())
		require.NoError(t, m.Wake("test"))
		require.Equal(t, OutcomePowerOff.String(), (<-done).String())
	})
}
