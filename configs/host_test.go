package configs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
)

func hostExample(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("examples", "host", "host.toml"))
	require.NoError(t, err)
	return string(b)
}

// TestHostExampleLoads proves the documented example host config decodes
// strictly, validates, and means what its comments say, field by field.
func TestHostExampleLoads(t *testing.T) {
	h, err := LoadHost(filepath.Join("examples", "host", "host.toml"))
	require.NoError(t, err)
	assert.Equal(t, "/etc/pmvm/vms", h.VMDir)
	assert.Equal(t, "/var/lib/pmvm/state", h.StateDir)
	assert.Equal(t, "/run/pmvm", h.RuntimeDir)
	assert.Equal(t, "/var/log/pmvm", h.LogDir)
	assert.Equal(t, 2*time.Minute, h.SaveTimeout.Std())
	assert.Equal(t, 2*time.Minute, h.RestoreTimeout.Std())
	require.NotNil(t, h.Hooks.PreSave)
	assert.Equal(t, []string{"/usr/local/sbin/lb-drain", "--wait"}, h.Hooks.PreSave.Command)
	assert.Equal(t, 30*time.Second, h.Hooks.PreSave.Timeout.Std())
	assert.Equal(t, 10*time.Second, h.Hooks.PreKexec.Timeout.Std())
	require.NotNil(t, h.Hooks.PostRestore)
	require.NotNil(t, h.Hooks.OnFailure)
	assert.True(t, h.Limits.CgroupsEnabled())
	assert.Equal(t, uint64(100), h.Limits.CPUWeight)
	assert.Equal(t, Size(256*memspec.MiB), h.Limits.VMMMemoryOverhead)
	assert.Equal(t, int64(1024), h.Limits.Pids)
	assert.Equal(t, "/var/lib/pmvm/state/web1.state", h.StatePath("web1"))
	assert.Equal(t, "/var/lib/pmvm/state/update-timeline.json", h.TimelinePath())
}

// TestHostDefaults proves an empty host config is valid and gets every
// default, including a hook's timeout when only its command is given.
func TestHostDefaults(t *testing.T) {
	h, err := DecodeHost("h.toml", strings.NewReader("[hooks.pre-kexec]\ncommand = [\"/bin/true\"]\n"))
	require.NoError(t, err)
	require.NoError(t, h.Validate())
	assert.Equal(t, DefaultVMDir, h.VMDir)
	assert.Equal(t, DefaultStateDir, h.StateDir)
	assert.Equal(t, DefaultHostRuntimeDir, h.RuntimeDir)
	assert.Equal(t, DefaultLogDir, h.LogDir)
	assert.Equal(t, DefaultSaveTimeout, h.SaveTimeout.Std())
	assert.Equal(t, DefaultHookTimeout, h.Hooks.PreKexec.Timeout.Std())
	assert.Nil(t, h.Hooks.PreSave)
	assert.True(t, h.Limits.CgroupsEnabled())
	assert.Equal(t, DefaultHost(), mustDecodeHost(t, ""))
}

func mustDecodeHost(t *testing.T, doc string) *Host {
	t.Helper()
	h, err := DecodeHost("h.toml", strings.NewReader(doc))
	require.NoError(t, err)
	return h
}

// TestHostUnknownKeys proves strict decoding: a misspelled key or table
// anywhere (top level, a hook, limits) is an error naming the key, where
// it is and its line, and every one is reported.
func TestHostUnknownKeys(t *testing.T) {
	doc := hostExample(t)
	doc = strings.Replace(doc, "state_dir = ", "statedir = ", 1)
	doc = strings.Replace(doc, `timeout = "10s"`, `timout = "10s"`, 1)
	doc = strings.Replace(doc, "pids = 1024", "pid = 1024", 1)
	doc += "\n[hooks.post-save]\ncommand = [\"/bin/true\"]\n"
	path := filepath.Join(t.TempDir(), "host.toml")
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	_, err := LoadHost(path)
	require.Error(t, err)
	msg := err.Error()
	assert.Contains(t, msg, `unknown key "statedir" at top level`)
	assert.Contains(t, msg, `unknown key "timout" in [hooks.pre-kexec]`)
	assert.Contains(t, msg, `unknown key "pid" in [limits]`)
	assert.Contains(t, msg, `"post-save"`)
	var fe *FileError
	require.True(t, errors.As(err, &fe))
	assert.Equal(t, path, fe.File)
	assert.Regexp(t, `^`+regexpQuote(path)+`:\d+: unknown key "statedir"`, strings.Split(msg, "\n")[0])
	assert.Equal(t, lineOf(t, doc, "statedir = "), fe.Line)
}

func regexpQuote(s string) string {
	return strings.NewReplacer(".", `\.`, "+", `\+`).Replace(s)
}

// TestHostTypeErrors proves a value of the wrong type is refused with the
// key, the line and what to write instead (a bare integer is not a
// duration: it would be nanoseconds).
func TestHostTypeErrors(t *testing.T) {
	for _, tc := range []struct {
		doc, want string
	}{
		{"save_timeout = 30", `the number 30 is not a duration (it would be nanoseconds): write a string with a unit, e.g. "30s"`},
		{"save_timeout = true", `duration "true": write e.g. "30s"`},
		{"[hooks.pre-save]\ncommand = \"/bin/true\"", `hooks.pre-save.command: expected an array of strings`},
		{"vm_dir = 7", `vm_dir: expected a string, not an integer`},
		{"[limits]\npids = \"many\"", `limits.pids: expected an integer, not a string`},
		{"[limits]\ncgroups = \"yes\"", `limits.cgroups: expected true or false, not a string`},
		{"restore_timeout = \"soon\"", `write e.g. "30s"`},
		{"[limits]\nvmm_memory_overhead = \"1.5GiB\"", `fractions are not accepted`},
	} {
		_, err := DecodeHost("h.toml", strings.NewReader(tc.doc))
		require.Error(t, err, tc.doc)
		assert.Contains(t, err.Error(), tc.want, tc.doc)
		assert.Contains(t, err.Error(), "h.toml:", tc.doc)
	}
}

// TestHostValidateRefusals proves Validate reports every problem at once,
// each a *FieldError naming its field: state on tmpfs or cleaned-at-boot
// directories, relative paths, a hook without a command or with a
// relative program, out-of-range limits and timeouts, a bad cgroup path.
func TestHostValidateRefusals(t *testing.T) {
	doc := `
vm_dir = "etc/vms"
state_dir = "/run/pmvm/state"
log_dir = "/var/log//pmvm"
save_timeout = "11m"
[hooks.pre-save]
timeout = "5s"
[hooks.pre-kexec]
command = ["notify-send", "bye"]
[hooks.on-failure]
command = ["/bin/true"]
timeout = "2h"
[limits]
cpu_weight = 20000
pids = -1
vmm_memory_overhead = "1MiB"
cgroup_parent = "../escape"
`
	h, err := DecodeHost("h.toml", strings.NewReader(doc))
	require.NoError(t, err)
	err = h.Validate()
	require.Error(t, err)
	fields := map[string]string{}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		require.True(t, errors.As(e, &fe), "%v", e)
		fields[fe.Field] += fe.Msg
	}
	for field, want := range map[string]string{
		"vm_dir":                     "not an absolute path",
		"state_dir":                  "does not survive a reboot or kexec",
		"log_dir":                    "clean form",
		"save_timeout":               "more than the maximum 10m0s",
		"hooks.pre-save.command":     "missing",
		"hooks.pre-kexec.command":    "must be an absolute path",
		"hooks.on-failure.timeout":   "more than the maximum",
		"limits.cpu_weight":          "out of range 1..10000",
		"limits.pids":                "negative",
		"limits.vmm_memory_overhead": "less than the minimum 32MiB",
		"limits.cgroup_parent":       "without \"..\"",
	} {
		assert.Contains(t, fields[field], want, field)
	}
	assert.Len(t, fields, 11, "%v", fields)

	for _, dir := range []string{"/tmp/state", "/dev/shm/state", "/run"} {
		h := DefaultHost()
		h.StateDir = dir
		assert.ErrorContains(t, h.Validate(), "state_dir", dir)
	}
	h = DefaultHost()
	h.StateDir = "/var/tmp/pmvm-state"
	assert.NoError(t, h.Validate(), "/var/tmp survives reboots")
	h.StateDir = h.VMDir
	assert.ErrorContains(t, h.Validate(), "same directory as vm_dir")
}

// TestDurationRoundTrip proves durations print the way they are written.
func TestDurationRoundTrip(t *testing.T) {
	var d Duration
	require.NoError(t, d.UnmarshalText([]byte("1m30s")))
	assert.Equal(t, 90*time.Second, d.Std())
	b, err := d.MarshalText()
	require.NoError(t, err)
	assert.Equal(t, "1m30s", string(b))
	assert.Error(t, d.UnmarshalText([]byte("-5s")))
	assert.Error(t, d.UnmarshalText([]byte("0s")))
}
