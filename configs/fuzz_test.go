package configs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode: arbitrary bytes never make Decode or Validate panic, and a
// config that validates keeps the invariants the VMM relies on.
// Seeds: the example configs plus testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("examples", "*.toml"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Decode("fuzz.toml", bytes.NewReader(data))
		if err != nil {
			if v != nil {
				t.Fatalf("Decode returned both a config and an error: %v", err)
			}
			_ = err.Error()
			return
		}
		_ = v.TotalMemory()
		if err := v.Validate(); err != nil {
			_ = err.Error()
			return
		}
		total := v.TotalMemory()
		if total < MinMemory || total > MaxMemory {
			t.Fatalf("valid config with total memory %d", total)
		}
		if v.VCPUs < 1 || v.VCPUs > MaxVCPUs {
			t.Fatalf("valid config with %d vCPUs", v.VCPUs)
		}
		for _, m := range v.Memory {
			if m.Size == 0 || uint64(m.Size)%MemoryAlign != 0 {
				t.Fatalf("valid config with memory block size %d", m.Size)
			}
		}
		if len(v.Agent.Socket) > MaxSocketPath || len(v.Control.Socket) > MaxSocketPath {
			t.Fatalf("valid config with an over-long socket path")
		}
	})
}
