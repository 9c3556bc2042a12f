package acpi

import (
	"os"
	"testing"
)

func TestZZTmpQEMUImage(t *testing.T) {
	c := DefaultConfig(2)
	c.SleepTypeS5 = 0
	c.SleepTypeS3 = 1
	c.ResetPort = 0xCF9
	c.PowerButton = os.Getenv("PB") != ""
	im, err := Build(c, 0xE0000)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/tmp/acpiw/piix.bin", im.Bytes, 0o644); err != nil {
		t.Fatal(err)
	}
}
