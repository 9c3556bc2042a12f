package qa

import (
	"bytes"
	"testing"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/qa/lab"
)

// TestGuestConfigDecodes checks that the config the lab writes for pmvm is
// accepted by pmvm's own strict decoder and means what the lab intends.
func TestGuestConfigDecodes(t *testing.T) {
	c := lab.DefaultGuestConfig()
	v, err := configs.Decode("lab guest.toml", bytes.NewReader(c.TOML()))
	if err != nil {
		t.Fatalf("%v\n%s", err, c.TOML())
	}
	if v.Name != "labguest" || v.VCPUs != 2 || v.Boot.Kernel != lab.LabGuestKernel || v.Boot.Initrd != lab.LabGuestInitrd {
		t.Errorf("decoded %+v", v)
	}
	if len(v.Memory) != 1 || uint64(v.Memory[0].Size) != 512<<20 || v.Memory[0].Backing != "anonymous" || !v.Memory[0].Shared {
		t.Errorf("decoded memory %+v", v.Memory)
	}
	if err := v.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if v.TotalMemory() != 512<<20 {
		t.Errorf("TotalMemory = %d", v.TotalMemory())
	}
}

// TestLabPMConfigs checks the configs of TestLabDax against pmvm's own
// decoder: the device-dax config (once the lab host filled in the device
// size) is valid, and the anonymous mode = "reboot" one decodes (that pmvm
// refuses it is TestLabDax's check, through "pmvm check").
func TestLabPMConfigs(t *testing.T) {
	dax := lab.DaxGuestConfig()
	text := bytes.ReplaceAll(dax.TOML(), []byte(lab.DaxSizeAuto), []byte("262144000"))
	v, err := configs.Decode("dax.toml", bytes.NewReader(text))
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if err := v.Validate(); err != nil {
		t.Errorf("dax config: %v\n%s", err, text)
	}
	if v.RunMode() != memspec.ModeReboot || v.Memory[0].Backing != "/dev/dax0.0" || uint64(v.Memory[0].Size) != 262144000 || !v.Memory[0].Shared {
		t.Errorf("decoded %+v", v)
	}
	anon := lab.AnonRebootConfig()
	v, err = configs.Decode("anon-reboot.toml", bytes.NewReader(anon.TOML()))
	if err != nil {
		t.Fatal(err)
	}
	if v.RunMode() != memspec.ModeReboot || v.Memory[0].Name != "ram0" || v.Memory[0].Backing != "anonymous" {
		t.Errorf("decoded %+v", v)
	}
}
