package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/state"
)

var stateTestSections = []string{"machine", "vcpu/0", "uart@0x3f8", "cmos@0x70", "acpi-pm@0x600", "memory/ram0", "clock"}

// writeStateFile writes a reboot-mode state file with one section per
// stateTestSections entry (cmos binary, the rest JSON).
func writeStateFile(t *testing.T) string {
	t.Helper()
	f := &state.File{Header: state.Header{
		Created:     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		PMVMVersion: "test",
		VMName:      "demo",
		Mode:        memspec.ModeReboot,
	}}
	for _, name := range stateTestSections {
		if name == "cmos@0x70" {
			require.NoError(t, f.Add(name, 1, make([]byte, 128)))
			continue
		}
		require.NoError(t, f.AddJSON(name, 1, map[string]string{"section": name}))
	}
	path := filepath.Join(t.TempDir(), "demo.pmvmstate")
	require.NoError(t, state.WriteFile(path, f))
	return path
}

// TestStateInspect proves "pmvm state inspect FILE" exits 0 and prints the
// header and every section, JSON payloads included; flags may follow FILE.
func TestStateInspect(t *testing.T) {
	path := writeStateFile(t)
	var out, errb bytes.Buffer
	code := cmdState([]string{"inspect", path}, &out, &errb)
	require.Equal(t, 0, code, errb.String())
	assert.Empty(t, errb.String())
	assert.Contains(t, out.String(), "file:         "+path+" (")
	assert.Contains(t, out.String(), "vm name:      demo")
	assert.Contains(t, out.String(), "mode:         reboot")
	assert.Contains(t, out.String(), "sections:     7")
	for _, name := range stateTestSections {
		assert.Contains(t, out.String(), "  "+name+" ")
	}
	assert.Contains(t, out.String(), `"section": "uart@0x3f8"`)
}

// TestStateInspectJSON proves --json prints one JSON document (path, size,
// header, every section) that decodes.
func TestStateInspectJSON(t *testing.T) {
	path := writeStateFile(t)
	var out, errb bytes.Buffer
	require.Equal(t, 0, cmdState([]string{"inspect", path, "--json"}, &out, &errb), errb.String())
	var got stateInspectJSON
	require.NoError(t, json.Unmarshal(out.Bytes(), &got))
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, path, got.File)
	assert.Equal(t, st.Size(), got.Size)
	assert.Equal(t, "1.0", got.Format)
	assert.Equal(t, "demo", got.VMName)
	require.Len(t, got.Sections, len(stateTestSections))
	for i, name := range stateTestSections {
		assert.Equal(t, name, got.Sections[i].Name)
	}
	assert.JSONEq(t, `{"section":"machine"}`, string(got.Sections[0].JSON))
}

// TestStateInspectRefusals proves a refused file exits 1 with the state
// package's message: a flipped bit is a checksum mismatch that says not to
// resume; a TOML config is not a state file; a missing file says so.
func TestStateInspectRefusals(t *testing.T) {
	path := writeStateFile(t)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[len(b)/2] ^= 0x01
	require.NoError(t, os.WriteFile(path, b, 0o600))

	var out, errb bytes.Buffer
	assert.Equal(t, exitFailure, cmdState([]string{"inspect", path}, &out, &errb))
	assert.Empty(t, out.String())
	assert.Contains(t, errb.String(), "pmvm state inspect: "+path+": state file is corrupt (checksum mismatch")
	assert.Contains(t, errb.String(), "do not resume from it; the guest's memory is untouched")

	toml := filepath.Join(t.TempDir(), "vm.toml")
	require.NoError(t, os.WriteFile(toml, []byte("name = \"demo\"\n"), 0o644))
	errb.Reset()
	assert.Equal(t, exitFailure, cmdState([]string{"inspect", "--json", toml}, &out, &errb))
	assert.Contains(t, errb.String(), "is not a pmvm state file")
	assert.Empty(t, out.String())

	errb.Reset()
	assert.Equal(t, exitFailure, cmdState([]string{"inspect", filepath.Join(t.TempDir(), "nope")}, &out, &errb))
	assert.Contains(t, errb.String(), "no such file")
}

// TestStateUsage proves usage errors exit 2 and help exits 0.
func TestStateUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"inspect"},
		{"inspect", "a", "b"},
		{"inspect", "--yaml", "a"},
	} {
		var out, errb bytes.Buffer
		assert.Equal(t, exitUsage, cmdState(args, &out, &errb), "%q", args)
		assert.NotEmpty(t, errb.String(), "%q", args)
	}
	var out, errb bytes.Buffer
	assert.Equal(t, 0, cmdState([]string{"help"}, &out, &errb))
	assert.Contains(t, out.String(), "pmvm state inspect FILE [--json]")
}

// goldenState is a state file written by pmvm's Machine.SaveState before
// the platform table (issue 11); vmm/testdata/README.md says how it was made.
const goldenState = "../../vmm/testdata/pre-issue-11.pmvmstate"

// goldenSections are every section of goldenState, in its order.
var goldenSections = []string{"machine", "clock", "uart@0x3f8", "uart@0x2f8", "cmos@0x70", "i8042@0x60", "acpi-pm@0x600", "memory/ram0", "vcpu/0", "vcpu/1"}

// TestStateInspectGoldenFile proves "pmvm state inspect" still reads a
// state file written before the platform table: it exits 0 and shows the
// header and every section with its payload, in text and in JSON.
func TestStateInspectGoldenFile(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, 0, cmdState([]string{"inspect", goldenState}, &out, &errb), errb.String())
	assert.Empty(t, errb.String())
	for _, want := range []string{"format:       1.0", "pmvm version: golden-f8deaf5", "vm name:      golden", "mode:         reboot", "sections:     10", `"platform": "pmvm-pc/1"`, `"SCR": 90`} {
		assert.Contains(t, out.String(), want)
	}
	for _, name := range goldenSections {
		assert.Contains(t, out.String(), "  "+name+" ", "section %s shown", name)
	}

	out.Reset()
	require.Equal(t, 0, cmdState([]string{"inspect", "--json", goldenState}, &out, &errb), errb.String())
	var got stateInspectJSON
	require.NoError(t, json.Unmarshal(out.Bytes(), &got))
	assert.Equal(t, "golden", got.VMName)
	var names []string
	for _, s := range got.Sections {
		names = append(names, s.Name)
		assert.True(t, json.Valid(s.JSON), "section %s shown as JSON", s.Name)
	}
	assert.Equal(t, goldenSections, names)
}
