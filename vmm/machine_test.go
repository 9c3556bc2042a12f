package vmm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/vmm/devices/acpipm"
	"github.com/pmvm/pmvm/vmm/x86/x86test"
)

// helloThenPowerOff prints "pmvm\n" through COM1 the way a driver does
// (polling LSR.THRE before each byte), then enters S5 through PM1a_CNT.
func helloThenPowerOff() []byte {
	slp := uint16(acpipm.SleepTypeS5)<<10 | 1<<13
	return []byte{
		0x48, 0x8d, 0x35, 0x27, 0, 0, 0, // lea rsi, [rip+msg]
		0x8a, 0x06, // next: mov al, [rsi]
		0x84, 0xc0, // test al, al
		0x74, 0x15, // jz done
		0x66, 0xba, 0xfd, 0x03, // mov dx, 0x3fd (LSR)
		0xec,       // wait: in al, dx
		0xa8, 0x20, // test al, THRE
		0x74, 0xfb, // jz wait
		0x8a, 0x06, // mov al, [rsi]
		0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8 (THR)
		0xee,             // out dx, al
		0x48, 0xff, 0xc6, // inc rsi
		0xeb, 0xe5, // jmp next
		0x66, 0xb8, byte(slp), byte(slp >> 8), // done: mov ax, SLP_TYP|SLP_EN
		0x66, 0xba, 0x04, 0x06, // mov dx, 0x604 (PM1a_CNT)
		0x66, 0xef, // out dx, ax
		0xeb, 0xfe, // jmp $
		'p', 'm', 'v', 'm', '\n', 0, // msg
	}
}

// resetThroughI8042 pulses the reset line with the keyboard controller's
// 0xfe command, as Linux's reboot does.
func resetThroughI8042() []byte {
	return []byte{
		0xb0, 0xfe, // mov al, 0xfe
		0xe6, 0x64, // out 0x64, al
		0xeb, 0xfe, // jmp $
	}
}

// syncBuffer is a bytes.Buffer safe for the vCPU thread and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func tinyMachine(t *testing.T, code []byte, vcpus int) (*Machine, *syncBuffer) {
	t.Helper()
	return tinyMachineWith(t, code, vcpus, nil)
}

// tinyMachineWith is tinyMachine with its config changed by edit first.
func tinyMachineWith(t *testing.T, code []byte, vcpus int, edit func(*configs.VM)) (*Machine, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	kernel := filepath.Join(dir, "bzImage")
	require.NoError(t, os.WriteFile(kernel, x86test.BzImage(code), 0o644))
	cfg := &configs.VM{
		Name:  "tiny",
		VCPUs: vcpus,
		Boot:  configs.Boot{Kernel: kernel, Cmdline: "console=ttyS0"},
		Memory: []configs.Memory{
			{Name: "ram0", Size: configs.Size(64 << 20), Backing: memspec.BackingAnonymous, Shared: true},
		},
	}
	if edit != nil {
		edit(cfg)
	}
	console := &syncBuffer{}
	m, err := New(cfg, Options{Log: zerolog.New(zerolog.NewTestWriter(t)), Console: console})
	require.NoError(t, err, "this test needs /dev/kvm")
	t.Cleanup(func() {
		assert.Zero(t, m.IllegalTransitions(), "runstate moves the runstate machine does not allow")
		m.Close()
	})
	require.NoError(t, m.Boot())
	return m, console
}

// TestMachinePowerOff proves the whole machine on this host's /dev/kvm: a
// bzImage is loaded through the 64-bit boot protocol, the vCPU enters long
// mode at its entry point, COM1 output reaches the console writer through the
// UART model, the S5 write to the PM1 block ends Run with OutcomePowerOff,
// and the second vCPU, still waiting for SIPI, is stopped with it.
func TestMachinePowerOff(t *testing.T) {
	m, console := tinyMachine(t, helloThenPowerOff(), 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	outcome, err := m.Run(ctx)
	require.NoError(t, err)
	require.Equal(t, OutcomePowerOff.String(), outcome.String())
	require.Equal(t, "pmvm\n", console.String())
	require.Equal(t, StateStopped, m.Status().RunState)
}

// TestMachineResetRequest proves the i8042 reset command ends Run with
// OutcomeReset (pmvm run exits with its reboot code).
func TestMachineResetRequest(t *testing.T) {
	m, _ := tinyMachine(t, resetThroughI8042(), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	outcome, err := m.Run(ctx)
	require.NoError(t, err)
	require.Equal(t, OutcomeReset.String(), outcome.String())
}

// TestMachineStopsOnCancel proves a guest spinning forever is stopped by the
// host (signal handling in pmvm run) within the deadline.
func TestMachineStopsOnCancel(t *testing.T) {
	m, _ := tinyMachine(t, []byte{0xeb, 0xfe}, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	outcome, err := m.Run(ctx)
	require.NoError(t, err)
	require.Equal(t, OutcomeStopped.String(), outcome.String())
	require.Less(t, time.Since(start), 5*time.Second)
}

// TestMachineTripleFault proves a guest triple fault ends Run with
// OutcomeReset and logs where the vCPU was: ud2 with no IDT faults, then
// double faults, then shuts down, and the log names the RIP of the ud2.
func TestMachineTripleFault(t *testing.T) {
	m, _ := tinyMachine(t, []byte{0x90, 0x0f, 0x0b}, 1) // nop; ud2
	logs := &syncBuffer{}
	m.log = zerolog.New(logs)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	outcome, err := m.Run(ctx)
	require.NoError(t, err)
	require.Equal(t, OutcomeReset.String(), outcome.String())
	assert.Regexp(t, `"rip":"0x[0-9a-f]+".*"cr0":"0x[0-9a-f]+".*"efer":"0x[0-9a-f]+".*"message":"guest triple fault: vCPU state at the shutdown"`, logs.String())
}
