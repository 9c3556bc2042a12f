package vmm

import (
	"math/rand"
	"path/filepath"
	"reflect"
	"testing"
	"testing/quick"

	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/state"
)

// TestEverySectionRoundTripsThroughAStateFile proves that every record a
// save writes comes back identical after the real path (JSON into a
// section, the file encoded, written, read and decoded): random values of
// each record type, so a field the encoding drops or bends (unexported,
// wrong tag, precision) fails here rather than in a resumed guest.
func TestEverySectionRoundTripsThroughAStateFile(t *testing.T) {
	types := map[string]reflect.Type{
		secMachine:            reflect.TypeOf(machineRecord{}),
		secClock:              reflect.TypeOf(clockRecord{}),
		memorySection("ram0"): reflect.TypeOf(pmem.Identity{}),
		vcpuSection(0):        reflect.TypeOf(vcpuRecord{}),
	}
	// Every stateful device of the platform table, with the record it saves.
	for _, d := range pureDevices(t) {
		if d.state != nil {
			types[d.name()] = reflect.TypeOf(d.state.save())
		}
	}
	require.Len(t, types, 4+5, "machine, clock, memory, vcpu and the five stateful devices")
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 50; round++ {
		f := &state.File{Header: state.Header{VMName: "vm", Mode: memspec.ModeReboot, PMVMVersion: "test"}}
		want := map[string]reflect.Value{}
		for name, typ := range types {
			v, ok := quick.Value(typ, rng)
			require.True(t, ok, "cannot generate a %s", typ)
			want[name] = v
			require.NoError(t, f.AddJSON(name, recordVersion, v.Interface()))
		}
		path := filepath.Join(t.TempDir(), "vm.state")
		require.NoError(t, state.WriteFile(path, f))
		back, err := state.ReadFile(path)
		require.NoError(t, err)
		for name, typ := range types {
			s, err := back.Need(name, recordVersion)
			require.NoError(t, err)
			got := reflect.New(typ)
			require.NoError(t, s.DecodeJSON(got.Interface()), name)
			if !reflect.DeepEqual(want[name].Interface(), got.Elem().Interface()) {
				t.Fatalf("section %s (%s) changed through the state file:\n want %+v\n  got %+v", name, typ, want[name].Interface(), got.Elem().Interface())
			}
		}
	}
}
