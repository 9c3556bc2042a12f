package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/acpi"
	"github.com/pmvm/pmvm/vmm/x86"
	"github.com/pmvm/pmvm/vmm/x86/x86test"
)

const wakeVector = x86test.WakeVector

// suspendingKernel writes x86test's self-suspending guest: it sets the FACS
// waking vector, leaves a marker in RAM, prints 'S' and enters S3.
func suspendingKernel(t *testing.T, dir string) string {
	tables, err := acpi.Build(vmm.ACPIConfig(1), x86.ACPITablesAddr)
	require.NoError(t, err)
	path := filepath.Join(dir, "bzImage")
	require.NoError(t, os.WriteFile(path, x86test.SuspendingKernel(tables.FACS), 0o644))
	return path
}

// resumeCode runs at the waking vector: it prints 'W', the marker, and
// PM1_STS's high byte (WAK_STS = 0x80), then powers off.
var resumeCode = x86test.ResumeCode

func shmBacking(t *testing.T, suffix string) string {
	path := fmt.Sprintf("/dev/shm/pmvm-test-%d-%s%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_"), suffix)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	require.NoError(t, err, "/dev/shm must be a writable tmpfs")
	t.Cleanup(func() { os.Remove(path) })
	require.NoError(t, f.Truncate(64<<20))
	require.NoError(t, f.Close())
	return path
}

func rebootModeConfig(t *testing.T, dir, kernel, backing string, vcpus int) string {
	cfg := fmt.Sprintf(`name = "tiny"
vcpus = %d
mode = "reboot"
[boot]
kernel = %q
[[memory]]
name = "ram0"
size = "64MiB"
backing = %q
shared = true
preserved_across_kexec = true
[console]
output = "stdout"
[agent]
socket = %q
[control]
socket = %q
`, vcpus, kernel, backing, filepath.Join(dir, "agent.sock"), filepath.Join(dir, "control.sock"))
	path := filepath.Join(dir, fmt.Sprintf("vm%d.toml", vcpus))
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
	return path
}

func fileSum(t *testing.T, path string) [32]byte {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return sha256.Sum256(b)
}

// TestSaveAndResumeInANewMachine proves reboot mode end to end on /dev/kvm
// with a tiny guest on a shared-memory backing: the guest suspends itself,
// pmvm save writes the state file and the first pmvm exits 0; a second pmvm
// run --incoming with the same config checks the file, maps the same memory,
// restores the devices and wakes the guest at its waking vector, where it
// finds the marker it left in RAM and sees WAK_STS. A config that no longer
// matches (vcpus changed) is refused field by field and the guest's memory
// is byte-for-byte untouched by the refusal.
func TestSaveAndResumeInANewMachine(t *testing.T) {
	dir := t.TempDir()
	backing := shmBacking(t, "")
	cfg := rebootModeConfig(t, dir, suspendingKernel(t, dir), backing, 1)
	ctl := filepath.Join(dir, "control.sock")

	var out1, err1 bytes.Buffer
	exited := make(chan int, 1)
	go func() { exited <- runMain([]string{"run", cfg, "--log-level", "warn"}, &out1, &err1) }()
	require.Eventually(t, func() bool {
		var o, e bytes.Buffer
		return cmdStatus([]string{"tiny", "--control", ctl}, &o, &e) == 0 && strings.Contains(o.String(), "suspended")
	}, 10*time.Second, 10*time.Millisecond, "the guest suspends itself")

	statePath := filepath.Join(dir, "tiny.state")
	var so, se bytes.Buffer
	require.Equal(t, 0, cmdSave([]string{"tiny", "--control", ctl, "--state", statePath}, &so, &se), se.String())
	assert.Contains(t, so.String(), "state durable")
	assert.Contains(t, so.String(), "pmvm exited")
	select {
	case code := <-exited:
		require.Equal(t, exitPowerOff, code, err1.String())
	case <-time.After(10 * time.Second):
		t.Fatal("pmvm did not exit after save")
	}
	assert.Equal(t, "S", out1.String())
	assert.FileExists(t, statePath)

	var io, ie bytes.Buffer
	require.Equal(t, 0, cmdState([]string{"inspect", statePath}, &io, &ie), ie.String())
	for _, sec := range []string{"machine", "clock", "memory/ram0", "vcpu/0", "uart@0x3f8", "uart@0x2f8", "cmos@0x70", "i8042@0x60", "acpi-pm@0x600"} {
		assert.Contains(t, io.String(), sec, "pmvm state inspect shows every section")
	}

	// A config that is not the saved machine is refused, and the refusal
	// does not touch guest memory.
	before := fileSum(t, backing)
	wrong := rebootModeConfig(t, dir, filepath.Join(dir, "bzImage"), backing, 2)
	var wo, we bytes.Buffer
	assert.Equal(t, exitFailure, runMain([]string{"run", wrong, "--incoming", statePath, "--log-level", "error"}, &wo, &we))
	assert.Contains(t, we.String(), "vcpus: saved machine has 1, config has 2")
	assert.Contains(t, we.String(), "untouched")
	assert.Equal(t, before, fileSum(t, backing), "guest memory unchanged by a refused resume")

	var out2, err2 bytes.Buffer
	code := runMain([]string{"run", cfg, "--incoming", statePath, "--log-level", "warn"}, &out2, &err2)
	require.Equal(t, exitPowerOff, code, err2.String())
	assert.Equal(t, "WM\x80", out2.String(), "resumed at the vector, memory intact, WAK_STS set")
	assert.Contains(t, err2.String(), "vCPUs running")
}

// savedGuest runs the suspending tiny guest and saves it; it returns the
// config, the backing and the state file.
func savedGuest(t *testing.T) (dir, cfg, backing, statePath string) {
	dir = t.TempDir()
	backing = shmBacking(t, "")
	cfg = rebootModeConfig(t, dir, suspendingKernel(t, dir), backing, 1)
	ctl, exited := bootToS3(t, dir, cfg)
	statePath = filepath.Join(dir, "tiny.state")
	var so, se bytes.Buffer
	require.Equal(t, 0, cmdSave([]string{"tiny", "--control", ctl, "--state", statePath}, &so, &se), se.String())
	require.Equal(t, exitPowerOff, <-exited)
	return dir, cfg, backing, statePath
}

// bootToS3 cold-boots the tiny guest of cfg (in dir) in a pmvm run of its
// own and waits until it has suspended itself; exited gets run's exit code.
func bootToS3(t *testing.T, dir, cfg string) (ctl string, exited <-chan int) {
	t.Helper()
	ctl = filepath.Join(dir, "control.sock")
	done := make(chan int, 1)
	go func() {
		var o, e bytes.Buffer
		done <- runMain([]string{"run", cfg, "--log-level", "error"}, &o, &e)
	}()
	require.Eventually(t, func() bool {
		var o, e bytes.Buffer
		return cmdStatus([]string{"tiny", "--control", ctl}, &o, &e) == 0 && strings.Contains(o.String(), "suspended")
	}, 10*time.Second, 10*time.Millisecond, "the cold boot runs and the guest suspends itself")
	return ctl, done
}

// TestResumeRefusals proves each bad resume is refused with a message that
// says what is wrong, before guest memory is mapped: the guest's memory is
// byte-for-byte the same afterwards, and a correct resume still works.
func TestResumeRefusals(t *testing.T) {
	dir, cfg, backing, statePath := savedGuest(t)
	good, err := os.ReadFile(statePath)
	require.NoError(t, err)
	before := fileSum(t, backing)

	writeState := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)/2] ^= 0x40
	newer := append([]byte(nil), good...)
	newer[8] = 9 // format major 9
	otherBacking := shmBacking(t, "-other")

	otherName := strings.Replace(readFile(t, cfg), `name = "tiny"`, `name = "other"`, 1)
	otherCfg := writeState("other.toml", []byte(otherName))
	movedCfg := writeState("moved.toml", []byte(strings.Replace(readFile(t, cfg), backing, otherBacking, 1)))

	for _, c := range []struct {
		name, cfg, state, want string
	}{
		{"truncated", cfg, writeState("trunc.state", good[:len(good)-10]), "truncated"},
		{"corrupted", cfg, writeState("corrupt.state", corrupt), "checksum"},
		{"newer format", cfg, writeState("newer.state", newer), "newer than this pmvm"},
		{"not a state file", cfg, cfg, "not a pmvm state file"},
		{"missing", cfg, filepath.Join(dir, "nope.state"), "no such file"},
		{"other VM", otherCfg, statePath, `it holds VM "tiny"`},
		{"different backing", movedCfg, statePath, "not the memory the guest was saved in"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var o, e bytes.Buffer
			code := runMain([]string{"run", c.cfg, "--incoming", c.state, "--log-level", "error"}, &o, &e)
			assert.Equal(t, exitFailure, code)
			assert.Contains(t, e.String(), c.want)
			assert.Empty(t, o.String(), "the guest never ran")
		})
	}
	assert.Equal(t, before, fileSum(t, backing), "no refusal touched guest memory")

	var o, e bytes.Buffer
	require.Equal(t, exitPowerOff, runMain([]string{"run", cfg, "--incoming", statePath, "--log-level", "error"}, &o, &e), e.String())
	assert.Equal(t, "WM\x80", o.String())
}

func readFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

// TestMissingBackingExitsLikeAnInvalidConfig proves that a memory backing
// that does not exist is refused with the exit code of a config this host
// cannot run (2), on a boot and on a resume alike (with create = true too:
// a resume has no guest memory to create), and that each refusal says that
// guest memory was not touched.
func TestMissingBackingExitsLikeAnInvalidConfig(t *testing.T) {
	_, cfg, backing, statePath := savedGuest(t)
	dir := t.TempDir()
	missing := fmt.Sprintf("/dev/shm/pmvm-cmd-test-%d-missing", os.Getpid())
	os.Remove(missing)
	gone := filepath.Join(dir, "gone.toml")
	require.NoError(t, os.WriteFile(gone, []byte(strings.Replace(readFile(t, cfg), backing, missing, 1)), 0o644))
	create := filepath.Join(dir, "create.toml")
	require.NoError(t, os.WriteFile(create, []byte(strings.Replace(readFile(t, gone), "shared = true", "shared = true\ncreate = true", 1)), 0o644))
	t.Cleanup(func() { os.Remove(missing) })

	for _, c := range []struct {
		name string
		args []string
	}{
		{"boot", []string{"run", gone, "--log-level", "error"}},
		{"resume", []string{"run", gone, "--incoming", statePath, "--log-level", "error"}},
		{"resume with create = true", []string{"run", create, "--incoming", statePath, "--log-level", "error"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var o, e bytes.Buffer
			assert.Equal(t, exitUsage, runMain(c.args, &o, &e), e.String())
			assert.Contains(t, e.String(), "does not exist")
			assert.Contains(t, e.String(), "guest memory was not touched")
			assert.NoFileExists(t, missing, "nothing created")
		})
	}
	assert.FileExists(t, statePath, "the state file is left for a resume on the right memory")
}
