package configs

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// MachineSpec is the part of a config that defines the machine the guest
// sees. A suspended guest may only resume on a config whose MachineSpec is
// equal; everything else (paths of logs and sockets, the kernel file, which
// is already in guest RAM, the command line) may change between save and
// resume. Backing paths are not part of it: the memory's identity is checked
// separately, so a renamed device node holding the same memory still matches.
type MachineSpec struct {
	VCPUs  int           `json:"vcpus"`
	Mode   memspec.Mode  `json:"mode"`
	Memory []MemoryShape `json:"memory"`
}

// MemoryShape is a memory block as the guest sees it: its place in the
// guest-physical layout comes from the order and sizes.
type MemoryShape struct {
	Name string `json:"name"`
	Size Size   `json:"size"`
}

// Machine returns the machine-defining part of the config.
func (v *VM) Machine() MachineSpec {
	s := MachineSpec{VCPUs: v.VCPUs, Mode: v.RunMode()}
	for _, m := range v.Memory {
		s.Memory = append(s.Memory, MemoryShape{Name: m.Name, Size: m.Size})
	}
	return s
}

// Fingerprint is the SHA-256 of the spec's canonical JSON.
func (s MachineSpec) Fingerprint() [32]byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic("configs: MachineSpec does not marshal: " + err.Error()) // plain data: cannot happen
	}
	return sha256.Sum256(b)
}

// Diff explains, field by field, how other (the config at hand) differs
// from s (the saved machine). Empty means the machines are the same.
func (s MachineSpec) Diff(other MachineSpec) []string {
	var d []string
	if s.VCPUs != other.VCPUs {
		d = append(d, fmt.Sprintf("vcpus: saved machine has %d, config has %d", s.VCPUs, other.VCPUs))
	}
	if s.Mode != other.Mode {
		d = append(d, fmt.Sprintf("mode: saved machine is %q, config is %q", s.Mode, other.Mode))
	}
	n := len(s.Memory)
	if len(other.Memory) > n {
		n = len(other.Memory)
	}
	for i := 0; i < n; i++ {
		switch {
		case i >= len(other.Memory):
			d = append(d, fmt.Sprintf("memory[%d]: saved machine has block %q (%s), config has no such block", i, s.Memory[i].Name, s.Memory[i].Size))
		case i >= len(s.Memory):
			d = append(d, fmt.Sprintf("memory[%d]: config adds block %q (%s), the saved machine had none", i, other.Memory[i].Name, other.Memory[i].Size))
		default:
			a, b := s.Memory[i], other.Memory[i]
			if a.Name != b.Name {
				d = append(d, fmt.Sprintf("memory[%d]: saved block is named %q, config names it %q", i, a.Name, b.Name))
			}
			if a.Size != b.Size {
				d = append(d, fmt.Sprintf("memory[%d] %q: saved size %s, config size %s", i, a.Name, a.Size, b.Size))
			}
		}
	}
	return d
}
