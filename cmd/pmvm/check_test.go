package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/pmem/memspec"
)

// demoInMode writes configs/examples/demo.toml (512MiB of anonymous
// memory) with mode set, and returns its path.
func demoInMode(t *testing.T, mode string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "configs", "examples", "demo.toml"))
	require.NoError(t, err)
	doc := strings.Replace(string(b), "mode = \"none\"\n", fmt.Sprintf("mode = %q\n", mode), 1)
	require.Contains(t, doc, fmt.Sprintf("mode = %q\n", mode))
	path := filepath.Join(t.TempDir(), "demo.toml")
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o644))
	return path
}

// The demo config in reboot mode passes config validation but its
// anonymous RAM cannot survive a kexec: pmvm check prints the table naming
// the block, its backing, size, alignment and class, says what to use
// instead, and exits 1.
func TestCheckRefusesAnonymousInRebootMode(t *testing.T) {
	var out, errb bytes.Buffer
	code := cmdCheck([]string{demoInMode(t, "reboot")}, &out, &errb)
	assert.Equal(t, exitFailure, code, "stderr: %s", errb.String())
	assert.Empty(t, errb.String())
	lines := strings.Split(out.String(), "\n")
	require.Regexp(t, `^BLOCK +BACKING +SIZE +ALIGN +CLASS +VERDICT$`, lines[0])
	require.Regexp(t, `^ram0 +anonymous +512MiB +2MiB +volatile +REFUSED: is volatile: mode reboot needs memory that survives a host kexec; use a device-dax namespace \(/dev/daxX\.Y`, lines[1])
	assert.Contains(t, out.String(), `vm "demo", mode reboot: 1 of 1 memory blocks REFUSED`)
}

// --json prints the same report as JSON that decodes into pmem's types.
func TestCheckJSON(t *testing.T) {
	var out, errb bytes.Buffer
	code := cmdCheck([]string{"--json", demoInMode(t, "reboot")}, &out, &errb)
	assert.Equal(t, exitFailure, code)
	var res checkResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &res), out.String())
	assert.Equal(t, "demo", res.VM)
	assert.Equal(t, memspec.ModeReboot, res.Mode)
	assert.False(t, res.OK)
	require.Len(t, res.Blocks, 1)
	b := res.Blocks[0]
	assert.Equal(t, "ram0", b.Block)
	assert.Equal(t, "anonymous", b.Backing)
	assert.Equal(t, pmem.KindAnonymous, b.Kind)
	assert.Equal(t, uint64(512<<20), b.Size)
	assert.Equal(t, uint64(2<<20), b.Align)
	assert.Equal(t, pmem.Volatile, b.Class)
	assert.False(t, b.OK)
	assert.Contains(t, b.Reason, "mode reboot needs memory that survives a host kexec")

	// The flag may come first or last.
	out.Reset()
	code = cmdCheck([]string{demoInMode(t, "none"), "-json"}, &out, &errb)
	assert.Equal(t, 0, code)
	require.NoError(t, json.Unmarshal(out.Bytes(), &res))
	assert.True(t, res.OK)
	assert.True(t, res.Blocks[0].OK)
}

// A restart-mode VM on memfd and a file to be created passes, and checking
// creates nothing.
func TestCheckAcceptsAndCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ram1")
	cfg := fmt.Sprintf(`name = "r"
mode = "restart"
vcpus = 1
[boot]
kernel = "/boot/vmlinuz"
[[memory]]
name = "ram0"
size = "64MiB"
backing = "memfd"
shared = true
[[memory]]
name = "ram1"
size = "4MiB"
backing = %q
shared = true
create = true
[agent]
socket = %q
[control]
socket = %q
`, file, filepath.Join(dir, "a.sock"), filepath.Join(dir, "c.sock"))
	path := filepath.Join(dir, "r.toml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
	var out, errb bytes.Buffer
	code := cmdCheck([]string{path}, &out, &errb)
	assert.Equal(t, 0, code, "stdout: %s\nstderr: %s", out.String(), errb.String())
	assert.Regexp(t, `(?m)^ram0 +memfd +64MiB +2MiB +survives-restart +ok$`, out.String())
	assert.Regexp(t, `(?m)^ram1 +\w+ `+regexpQuote(file)+` +4MiB +2MiB +survives-restart +ok$`, out.String())
	assert.Contains(t, out.String(), "ram1: does not exist yet: created at start (create = true)")
	assert.Contains(t, out.String(), `vm "r", mode restart: every memory block can honour the mode`)
	assert.NoFileExists(t, file)
}

func regexpQuote(s string) string {
	r := strings.NewReplacer(".", `\.`, "+", `\+`, "(", `\(`, ")", `\)`)
	return r.Replace(s)
}

// Every example config is checked without a usage error; each of its
// blocks appears in the table. (Whether they pass depends on this host:
// dax.toml needs /dev/dax0.0.)
func TestCheckExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "configs", "examples", "*.toml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		var out, errb bytes.Buffer
		code := cmdCheck([]string{f}, &out, &errb)
		assert.Contains(t, []int{0, exitFailure}, code, "%s: stderr %s", f, errb.String())
		assert.Regexp(t, `(?m)^ram0 `, out.String(), f)
	}
}

// Bad invocations and invalid configs exit 2 and say why.
func TestCheckUsage(t *testing.T) {
	var out, errb bytes.Buffer
	assert.Equal(t, exitUsage, cmdCheck(nil, &out, &errb))
	assert.Contains(t, errb.String(), "want exactly one CONFIG.toml")
	assert.Equal(t, exitUsage, cmdCheck([]string{"a.toml", "b.toml"}, &out, &errb))
	assert.Equal(t, exitUsage, cmdCheck([]string{"--yaml", "a.toml"}, &out, &errb))

	errb.Reset()
	assert.Equal(t, exitUsage, cmdCheck([]string{"/nonexistent/vm.toml"}, &out, &errb))
	assert.Contains(t, errb.String(), "/nonexistent/vm.toml")

	errb.Reset()
	dir := t.TempDir()
	bad := writeConfig(t, dir, "/boot/vmlinuz", `mode = "suspend"`)
	assert.Equal(t, exitUsage, cmdCheck([]string{bad}, &out, &errb))
	assert.Contains(t, errb.String(), "invalid config")
	assert.Empty(t, out.String())
}
