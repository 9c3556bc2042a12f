package vmm

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/vmm/x86"
	"github.com/pmvm/pmvm/vmm/x86/x86test"
)

// bootOver creates a machine whose RAM is a file holding fill (what a
// previous user of persistent memory left) and cold-boots the tiny guest
// code on it with 2 vCPUs.
func bootOver(t *testing.T, fill []byte, code []byte) (*Machine, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	kernel := filepath.Join(dir, "bzImage")
	require.NoError(t, os.WriteFile(kernel, x86test.BzImage(code), 0o644))
	backing := filepath.Join(dir, "ram0")
	require.NoError(t, os.WriteFile(backing, fill, 0o600))
	cfg := &configs.VM{Name: "coldboot", VCPUs: 2,
		Boot:   configs.Boot{Kernel: kernel, Cmdline: "console=ttyS0"},
		Memory: []configs.Memory{{Name: "ram0", Size: configs.Size(len(fill)), Backing: backing, Shared: true}}}
	console := &syncBuffer{}
	m, err := New(cfg, Options{Log: zerolog.New(zerolog.NewTestWriter(t)), Console: console})
	require.NoError(t, err, "this test needs /dev/kvm")
	t.Cleanup(func() { m.Close() })
	require.NoError(t, m.Boot())
	return m, console
}

// TestColdBootOverLeftoverMemory cold-boots the tiny guest over RAM filled
// with random bytes, as persistent memory another guest used may be: the
// first MiB of guest RAM (zero page, command line, page tables, GDT, IDT,
// ACPI tables, and everything between them) is the same as a boot over
// zeroed RAM, and the guest, which runs on pmvm's page tables and GDT,
// prints and powers off every time.
func TestColdBootOverLeftoverMemory(t *testing.T) {
	const size = 64 << 20
	ref, _ := bootOver(t, make([]byte, size), helloThenPowerOff())
	want := make([]byte, x86.HighMemStart)
	_, err := ref.mem.ReadAt(want, 0)
	require.NoError(t, err)

	for seed := int64(1); seed <= 10; seed++ {
		fill := make([]byte, size)
		rand.New(rand.NewSource(seed)).Read(fill)
		m, console := bootOver(t, fill, helloThenPowerOff())
		got := make([]byte, x86.HighMemStart)
		_, err := m.mem.ReadAt(got, 0)
		require.NoError(t, err)
		if !bytes.Equal(want, got) {
			i := 0
			for want[i] == got[i] {
				i++
			}
			t.Fatalf("seed %d: guest RAM below 1 MiB differs from a boot over zeroed RAM first at %#x: the cold boot left a byte of the old contents", seed, i)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		outcome, err := m.Run(ctx)
		cancel()
		require.NoError(t, err)
		require.Equal(t, OutcomePowerOff.String(), outcome.String(), "seed %d", seed)
		require.Equal(t, "pmvm\n", console.String(), "seed %d", seed)
	}
}
