package vmm

// TEMPORARY: writes a state file through the current Machine.SaveState and
// logs it base64-encoded, to keep as a golden file. Removed afterwards.

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/vmm/devices/acpipm"
	"github.com/pmvm/pmvm/vmm/x86/x86test"
)

func TestTmpGoldenExtract(t *testing.T) {
	dir := t.TempDir()
	backing := fmt.Sprintf("/dev/shm/pmvm-golden-%d-ram0", os.Getpid())
	f, err := os.OpenFile(backing, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	require.NoError(t, err)
	t.Cleanup(func() { os.Remove(backing) })
	require.NoError(t, f.Truncate(64<<20))
	require.NoError(t, f.Close())
	s3 := uint16(acpipm.SleepTypeS3)<<10 | 1<<13
	code := []byte{
		0x66, 0xba, 0xf9, 0x03, 0xb0, 0x0f, 0xee, // COM1 IER = 0x0f
		0x66, 0xba, 0xfb, 0x03, 0xb0, 0x1b, 0xee, // COM1 LCR = 0x1b
		0x66, 0xba, 0xff, 0x03, 0xb0, 0x5a, 0xee, // COM1 SCR = 0x5a
		0xb0, 0x0e, 0xe6, 0x70, 0xb0, 0x42, 0xe6, 0x71, // CMOS[0x0e] = 0x42
		0x66, 0xba, 0xf8, 0x03, 0xb0, 'S', 0xee, // out 'S'
		0x66, 0xb8, byte(s3), byte(s3 >> 8), // mov ax, SLP_TYP=S3|SLP_EN
		0x66, 0xba, 0x04, 0x06, 0x66, 0xef, // out to PM1a_CNT
		0xeb, 0xfe,
	}
	kernel := filepath.Join(dir, "bzImage")
	require.NoError(t, os.WriteFile(kernel, x86test.BzImage(code), 0o644))
	cfg := &configs.VM{Name: "golden", VCPUs: 2, Mode: configs.ModeReboot,
		Boot:   configs.Boot{Kernel: kernel, Cmdline: "console=ttyS0"},
		Memory: []configs.Memory{{Name: "ram0", Size: configs.Size(64 << 20), Backing: backing, Shared: true, PreservedAcrossKexec: true}}}
	console := &syncBuffer{}
	m, err := New(cfg, Options{Log: zerolog.New(zerolog.NewTestWriter(t)), Console: console})
	require.NoError(t, err)
	defer m.Close()
	require.NoError(t, m.Boot())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := m.Run(ctx); done <- err }()
	_, err = m.WaitRunState(ctx, StateSuspended)
	require.NoError(t, err)
	path := filepath.Join(dir, "golden.pmvmstate")
	require.NoError(t, m.SaveState(path, "golden-f8deaf5"))
	m.Finish()
	require.NoError(t, <-done)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	t.Logf("GOLDEN-BEGIN %s GOLDEN-END", base64.StdEncoding.EncodeToString(b))
	t.Logf("console %q", console.String())
}
