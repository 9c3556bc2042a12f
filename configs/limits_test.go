package configs

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// vmWithLimits is a valid config with tail (a [limits] table) appended.
func vmWithLimits(tail string) string {
	return `name = "l"
mode = "none"
vcpus = 2
[boot]
kernel = "/k"
[[memory]]
name = "ram0"
size = "64MiB"
backing = "anonymous"
[agent]
socket = "/run/pmvm/l/agent.sock"
[control]
socket = "/run/pmvm/l/control.sock"
` + tail
}

// TestVMLimitsDecode proves a VM config's [limits] decodes into its
// cgroup limits (sizes with units), validates, and that a config without
// one has none (every limit then comes from the host config).
func TestVMLimitsDecode(t *testing.T) {
	v, err := Decode("l.toml", strings.NewReader(vmWithLimits("[limits]\ncpu_weight = 50\nvmm_memory_overhead = \"128MiB\"\npids = 512\n")))
	require.NoError(t, err)
	require.NoError(t, v.Validate())
	assert.Equal(t, VMLimits{CPUWeight: 50, VMMMemoryOverhead: Size(128 * memspec.MiB), Pids: 512}, v.Limits)

	v, err = Decode("l.toml", strings.NewReader(vmWithLimits("[limits]\npids = 66\n")))
	require.NoError(t, err)
	require.NoError(t, v.Validate(), "vcpus + 64 is enough")

	v, err = Decode("l.toml", strings.NewReader(vmWithLimits("")))
	require.NoError(t, err)
	require.NoError(t, v.Validate())
	assert.Equal(t, VMLimits{}, v.Limits)

	ex, err := Load(filepath.Join("examples", "dax.toml"))
	require.NoError(t, err)
	assert.Equal(t, VMLimits{CPUWeight: 200, VMMMemoryOverhead: Size(256 * memspec.MiB), Pids: 512}, ex.Limits, "the documented example")
}

// TestVMLimitsRefused proves each bad [limits] value of a VM config is
// refused with an error naming the key: out-of-range weight, negative
// pids, pids too low for the vCPUs, an overhead below the minimum, values
// of the wrong type (with the line), and the keys only the host config
// has (cgroups, cgroup_parent) or typos.
func TestVMLimitsRefused(t *testing.T) {
	for _, tc := range []struct{ tail, field, want string }{
		{"cpu_weight = 20000", "limits.cpu_weight", "20000 is out of range 1..10000"},
		{"pids = -1", "limits.pids", "-1 is negative"},
		{"pids = 65", "limits.pids", "65 is too low for 2 vCPU(s): pmvm needs at least 66"},
		{"vmm_memory_overhead = \"1MiB\"", "limits.vmm_memory_overhead", "1MiB is less than the minimum 32MiB"},
	} {
		v, err := Decode("l.toml", strings.NewReader(vmWithLimits("[limits]\n"+tc.tail+"\n")))
		require.NoError(t, err, tc.tail)
		err = v.Validate()
		require.Error(t, err, tc.tail)
		var fe *FieldError
		require.True(t, errors.As(err, &fe), "%v", err)
		assert.Equal(t, tc.field, fe.Field, tc.tail)
		assert.Contains(t, fe.Msg, tc.want, tc.tail)
		assert.Contains(t, err.Error(), tc.field+": ", tc.tail)
	}
	for _, tc := range []struct{ tail, want string }{
		{"pids = \"many\"", `l.toml:15:8: limits.pids: expected an integer, not a string`},
		{"cpu_weight = -5", `l.toml:15:14: limits.cpu_weight: negative integer value -5`},
		{"cpu_weight = \"high\"", `l.toml:15:14: limits.cpu_weight: expected a whole number, not a string`},
		{"vmm_memory_overhead = \"1.5GiB\"", `l.toml:15:23: limits.vmm_memory_overhead: size "1.5GiB": fractions are not accepted`},
		{"cgroups = false", `l.toml:15: unknown key "cgroups" in [limits]`},
		{"cgroup_parent = \"/x\"", `l.toml:15: unknown key "cgroup_parent" in [limits]`},
		{"pid = 100", `l.toml:15: unknown key "pid" in [limits]`},
	} {
		_, err := Decode("l.toml", strings.NewReader(vmWithLimits("[limits]\n"+tc.tail+"\n")))
		require.Error(t, err, tc.tail)
		assert.Contains(t, err.Error(), tc.want, tc.tail)
	}
}

// TestVMLimitsOr proves a VM's own limit wins over the host's default for
// each key on its own, and a key it leaves out takes the default.
func TestVMLimitsOr(t *testing.T) {
	host := VMLimits{CPUWeight: 100, VMMMemoryOverhead: Size(256 * memspec.MiB), Pids: 1024}
	assert.Equal(t, host, VMLimits{}.Or(host))
	assert.Equal(t, VMLimits{CPUWeight: 50, VMMMemoryOverhead: Size(256 * memspec.MiB), Pids: 1024}, VMLimits{CPUWeight: 50}.Or(host))
	assert.Equal(t, VMLimits{CPUWeight: 100, VMMMemoryOverhead: Size(64 * memspec.MiB), Pids: 80}, VMLimits{VMMMemoryOverhead: Size(64 * memspec.MiB), Pids: 80}.Or(host))
	assert.Equal(t, VMLimits{Pids: 80}, VMLimits{Pids: 80}.Or(VMLimits{}))
}

// TestHostAndVMLimitsShareValidation proves the host's [limits] defaults
// are held to the same rules as a VM's (one validation for both), under
// the same key names.
func TestHostAndVMLimitsShareValidation(t *testing.T) {
	bad := VMLimits{CPUWeight: 10001, VMMMemoryOverhead: Size(memspec.MiB), Pids: -3}
	h := DefaultHost()
	h.Limits.VMLimits = bad
	v := &VM{Name: "x", VCPUs: 1, Limits: bad}
	fields := func(err error) map[string]string {
		out := map[string]string{}
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var fe *FieldError
			if errors.As(e, &fe) && strings.HasPrefix(fe.Field, "limits.") {
				out[fe.Field] = fe.Msg
			}
		}
		return out
	}
	hf, vf := fields(h.Validate()), fields(v.Validate())
	assert.Len(t, hf, 3, "%v", hf)
	assert.Equal(t, hf, vf)
}
