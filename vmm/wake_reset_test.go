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
	"github.com/pmvm/pmvm/vmm/devices/uart"
)

// TestWakeResetsTheDevices proves the firmware contract of an S3 wake on
// /dev/kvm: devices that lose power in S3 come back in their reset state.
// The guest programs COM1 (IER, LCR, scratch) and enters S3; while it is
// suspended the UART still holds that programming; after Wake the code at
// the waking vector reads the registers back as 0 and says so on COM1.
func TestWakeResetsTheDevices(t *testing.T) {
	s3 := uint16(acpipm.SleepTypeS3)<<10 | 1<<13
	s5 := uint16(acpipm.SleepTypeS5)<<10 | 1<<13
	m, console := tinyMachine(t, []byte{
		0x66, 0xba, 0xf9, 0x03, 0xb0, 0x0f, 0xee, // IER = 0x0f
		0x66, 0xba, 0xfb, 0x03, 0xb0, 0x1b, 0xee, // LCR = 0x1b (8E1, DLAB off)
		0x66, 0xba, 0xff, 0x03, 0xb0, 0x5a, 0xee, // SCR = 0x5a
		0x66, 0xba, 0xf8, 0x03, 0xb0, 'S', 0xee, // out 'S'
		0x66, 0xb8, byte(s3), byte(s3 >> 8), // mov ax, SLP_TYP=S3|SLP_EN
		0x66, 0xba, 0x04, 0x06, 0x66, 0xef, // out to PM1a_CNT
		0xeb, 0xfe,
	}, 1)
	const vector = 0x8000
	readOut := func(port uint16) []byte { // in al, port; out to COM1 data
		return []byte{0xba, byte(port), byte(port >> 8), 0xec, 0xba, 0xf8, 0x03, 0xee}
	}
	var wake []byte
	wake = append(wake, readOut(0x3f9)...) // IER
	wake = append(wake, readOut(0x3fb)...) // LCR
	wake = append(wake, readOut(0x3ff)...) // SCR
	wake = append(wake, 0xba, 0x04, 0x06, 0xb8, byte(s5), byte(s5>>8), 0xef, 0xeb, 0xfe)
	_, err := m.mem.WriteAt(wake, vector)
	require.NoError(t, err)
	var v [4]byte
	binary.LittleEndian.PutUint32(v[:], vector)
	_, err = m.mem.WriteAt(v[:], int64(m.tables.FACS+acpi.FACSFirmwareWakingVectorOffset))
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := m.Run(ctx); done <- err }()
	_, err = m.WaitRunState(ctx, StateSuspended)
	require.NoError(t, err)
	before := m.device(t, "uart@0x3f8").(*uart.UART).State()
	assert.Equal(t, [3]uint8{0x0f, 0x1b, 0x5a}, [3]uint8{before.IER, before.LCR, before.SCR}, "the guest's programming, held while suspended")
	require.NoError(t, m.Wake("test"))
	require.NoError(t, <-done)
	assert.Equal(t, "S\x00\x00\x00", console.String(), "IER, LCR and scratch read back as reset after the wake")
}
