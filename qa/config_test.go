package qa

import (
	"bytes"
	"testing"

	"github.com/pmvm/pmvm/configs"
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
