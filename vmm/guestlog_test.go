package vmm

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm/devices/acpipm"
)

// TestGuestCannotFloodTheLog proves a guest cannot flood pmvm's log: a
// guest writing a sleep type the machine does not offer 5000 times to
// PM1a_CNT gets at most guestLogBurst lines logged for it, and the machine's
// last line says how many were left out.
func TestGuestCannotFloodTheLog(t *testing.T) {
	bad := uint16(2)<<10 | 1<<13 // SLP_TYP=2 (not offered) | SLP_EN
	s5 := uint16(acpipm.SleepTypeS5)<<10 | 1<<13
	m, _ := tinyMachine(t, []byte{
		0x66, 0xba, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
		0xb9, 0x88, 0x13, 0, 0, // mov ecx, 5000
		0x66, 0xb8, byte(bad), byte(bad >> 8), // again: mov ax, SLP_TYP=2|SLP_EN
		0x66, 0xef, // out dx, ax
		0xff, 0xc9, // dec ecx
		0x75, 0xf6, // jnz again
		0x66, 0xb8, byte(s5), byte(s5 >> 8), // mov ax, S5|SLP_EN
		0x66, 0xef, // out dx, ax
		0xeb, 0xfe, // jmp $
	}, 1)
	logs := &syncBuffer{}
	m.log = zerolog.New(logs)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o, err := m.Run(ctx)
	require.NoError(t, err)
	require.Equal(t, OutcomePowerOff.String(), o.String())
	lines := strings.Count(logs.String(), "does not offer")
	assert.Positive(t, lines, "the guest's first bad writes are logged")
	assert.LessOrEqual(t, lines, guestLogBurst, "the guest flooded the log")
	assert.Contains(t, logs.String(), `"guest_log_lines_suppressed":`+strconv.Itoa(5000-lines))
}
