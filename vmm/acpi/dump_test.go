package acpi

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

var (
	dumpDir   = flag.String("dump", "", "TestDumpTables writes the tables of DefaultConfig(2) to this directory as <sig>.dat, and the whole image as image.bin")
	dumpBase  = flag.Uint64("dump-base", 0xE0000, "guest-physical base of the dumped image")
	dumpPIIX4 = flag.Bool("dump-piix4", false, "dump with QEMU PIIX4's SLP_TYP values (S3 = 1, S5 = 0), to boot the image on QEMU's PM1 block (see testdata/qemu-boot.sh)")
)

// TestDumpTables writes the tables to -dump DIR for inspection:
//
//	go test ./vmm/acpi -run TestDumpTables -args -dump /tmp/acpi
//	cd /tmp/acpi && iasl -d *.dat
//
// Without -dump it writes to a temporary directory and checks the files.
func TestDumpTables(t *testing.T) {
	c := DefaultConfig(2)
	if *dumpPIIX4 {
		c.SleepTypeS3, c.SleepTypeS5 = 1, 0
	}
	im, err := Build(c, *dumpBase)
	require.NoError(t, err)
	dir := *dumpDir
	if dir == "" {
		dir = t.TempDir()
	}
	require.NoError(t, im.DumpTables(dir))
	for sig, want := range im.Tables {
		got, err := os.ReadFile(filepath.Join(dir, sig+".dat"))
		require.NoError(t, err)
		require.Equal(t, want, got, sig)
	}
	// The whole image too, e.g. for QEMU's -device loader,file=image.bin,addr=BASE,force-raw=on.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "image.bin"), im.Bytes, 0o644))
	if *dumpDir != "" {
		t.Logf("wrote %v and image.bin to %s (image base 0x%X, %d bytes, FACS at 0x%X)",
			im.Signatures(), dir, im.Base, len(im.Bytes), im.FACS)
	}
}

// buildDefault builds the default configuration at the VMM's base 0xE0000.
func buildDefault(t *testing.T, cpus int) *Image {
	t.Helper()
	im, err := Build(DefaultConfig(cpus), 0xE0000)
	require.NoError(t, err)
	return im
}
