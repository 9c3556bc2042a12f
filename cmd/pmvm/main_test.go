package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmvm/pmvm/qa/labrun"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/kvm"
	"github.com/pmvm/pmvm/vmm/x86/x86test"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMain keeps this machine's host config away from the VMs tests run
// in this process: pmvm run would move the test process into their
// cgroups. Tests that want a host config pass --host-config. The tests
// run where a KVM host is: this machine's /dev/kvm, else a lab host. A
// seccomp filter would bind the test process itself for good, so pmvm run
// goes without one here (vmm/seccomp's tests and the lab's real pmvm
// processes run with it).
func TestMain(m *testing.M) {
	os.Setenv(hostConfigEnv, "/nonexistent/pmvm-test/host.toml")
	seccompByDefault = false
	labrun.Main(m, labrun.KVM)
}

// writeConfig writes a VM config into dir; extra is appended verbatim.
func writeConfig(t *testing.T, dir, kernel, extra string) string {
	t.Helper()
	if !strings.Contains(extra, "mode =") {
		extra = "mode = \"none\"\n" + extra
	}
	cfg := fmt.Sprintf(`name = "tiny"
vcpus = 1
%s
[boot]
kernel = %q
cmdline = "console=ttyS0"

[[memory]]
name = "ram0"
size = "64MiB"
backing = "anonymous"
shared = true

[console]
output = "stdout"

[agent]
socket = %q

[control]
socket = %q
`, extra, kernel, filepath.Join(dir, "agent.sock"), filepath.Join(dir, "control.sock"))
	path := filepath.Join(dir, "vm.toml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
	return path
}

// tinyKernel writes a bzImage whose 64-bit entry runs code.
func tinyKernel(t *testing.T, dir string, code []byte) string {
	path := filepath.Join(dir, "bzImage")
	require.NoError(t, os.WriteFile(path, x86test.BzImage(code), 0o644))
	return path
}

// TestRunRefusesUnknownKey proves a typo in the config stops pmvm run
// before anything starts, with a message naming the key and its line.
func TestRunRefusesUnknownKey(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, "/boot/vmlinuz", `vcpu = 2`)
	var out, errb bytes.Buffer
	code := runMain([]string{"run", path}, &out, &errb)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errb.String(), `unknown key "vcpu"`)
	assert.Contains(t, errb.String(), "vm.toml:4")
}

// TestRunPowerOffExitsZero proves the exit code contract end to end on
// /dev/kvm: the guest prints, enters S5, and pmvm run exits 0 with the
// guest's output on stdout.
func TestRunPowerOffExitsZero(t *testing.T) {
	dir := t.TempDir()
	kernel := tinyKernel(t, dir, []byte{
		0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'o', 0xee, // out 'o'
		0xb0, 'k', 0xee, // out 'k'
		0x66, 0xb8, 0x00, 0x34, // mov ax, SLP_TYP=5|SLP_EN
		0x66, 0xba, 0x04, 0x06, // mov dx, 0x604
		0x66, 0xef, // out dx, ax
		0xeb, 0xfe, // jmp $
	})
	var out, errb bytes.Buffer
	code := runMain([]string{"run", writeConfig(t, dir, kernel, ""), "--log-level", "warn"}, &out, &errb)
	assert.Equal(t, exitPowerOff, code, "stderr: %s", errb.String())
	assert.Equal(t, "ok", out.String())
	assert.NoFileExists(t, filepath.Join(dir, "control.sock"), "sockets are removed on exit")
}

// TestRunRebootExitCode proves a guest reset request gives the documented
// reboot exit code.
func TestRunRebootExitCode(t *testing.T) {
	dir := t.TempDir()
	kernel := tinyKernel(t, dir, []byte{0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe})
	var out, errb bytes.Buffer
	code := runMain([]string{"run", writeConfig(t, dir, kernel, ""), "--log-level", "warn"}, &out, &errb)
	assert.Equal(t, exitReboot, code, "stderr: %s", errb.String())
}

// TestRunRefusesNonKernel proves a file that is not a bzImage is refused
// with a message saying so.
func TestRunRefusesNonKernel(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "notakernel")
	require.NoError(t, os.WriteFile(kernel, make([]byte, 8192), 0o644))
	var out, errb bytes.Buffer
	code := runMain([]string{"run", writeConfig(t, dir, kernel, ""), "--log-level", "error"}, &out, &errb)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, errb.String(), "not a bzImage")
}

// TestRunChecksFilesBeforeKVM proves pmvm run judges the config's files
// before it touches KVM, and that a host without KVM gets one message
// saying so and what to do, with nothing created: on a host whose
// /dev/kvm is missing (played by pointing kvm.DevicePath elsewhere), a
// non-kernel is still refused as "not a bzImage", a missing initrd as
// such, and a good config fails on KVM alone, its memory file not created.
func TestRunChecksFilesBeforeKVM(t *testing.T) {
	old := kvm.DevicePath
	kvm.DevicePath = filepath.Join(t.TempDir(), "no-kvm-here")
	t.Cleanup(func() { kvm.DevicePath = old })
	dir := t.TempDir()
	run := func(cfg string) (int, string) {
		var out, errb bytes.Buffer
		code := runMain([]string{"run", cfg, "--log-level", "error"}, &out, &errb)
		return code, errb.String()
	}

	notKernel := filepath.Join(dir, "notakernel")
	require.NoError(t, os.WriteFile(notKernel, make([]byte, 8192), 0o644))
	code, msg := run(writeConfig(t, dir, notKernel, ""))
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, msg, "not a bzImage")
	assert.NotContains(t, msg, "usable KVM")

	kernel := tinyKernel(t, dir, []byte{0xf4})
	ram := filepath.Join(dir, "ram0")
	cfg := strings.Replace(readFile(t, writeConfig(t, dir, kernel, "")), `backing = "anonymous"`, fmt.Sprintf("backing = %q\ncreate = true", ram), 1)
	withInitrd := strings.Replace(cfg, `cmdline = "console=ttyS0"`, fmt.Sprintf("cmdline = \"console=ttyS0\"\ninitrd = %q", filepath.Join(dir, "missing.cpio")), 1)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "initrd.toml"), []byte(withInitrd), 0o644))
	code, msg = run(filepath.Join(dir, "initrd.toml"))
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, msg, "initrd: open "+filepath.Join(dir, "missing.cpio")+": no such file or directory")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "good.toml"), []byte(cfg), 0o644))
	code, msg = run(filepath.Join(dir, "good.toml"))
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, msg, "this host has no usable KVM: "+kvm.DevicePath+" does not exist; load kvm_intel or kvm_amd")
	assert.Equal(t, 1, strings.Count(msg, "usable KVM"), "one message: %s", msg)
	assert.NoFileExists(t, ram, "nothing created on a host without KVM")
	assert.NoFileExists(t, filepath.Join(dir, "control.sock"))
}

// TestUsage proves bad invocations exit 2 and say what is wrong.
func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	assert.Equal(t, exitUsage, runMain(nil, &out, &errb))
	assert.Equal(t, exitUsage, runMain([]string{"frobnicate"}, &out, &errb))
	assert.Contains(t, errb.String(), `unknown command "frobnicate"`)
	assert.Equal(t, exitUsage, runMain([]string{"run"}, &out, &errb))
	assert.Equal(t, exitUsage, runMain([]string{"run", "x.toml", "--log-level", "loud"}, &out, &errb))
}

// TestSuspendWithoutAgentFailsAndGuestKeepsRunning proves that when no
// guest agent answers on COM2, pmvm suspend fails within its timeout with a
// message naming the agent, and the guest is still running afterwards;
// status and stop then work over the control socket.
func TestSuspendWithoutAgentFailsAndGuestKeepsRunning(t *testing.T) {
	dir := t.TempDir()
	kernel := tinyKernel(t, dir, []byte{0xeb, 0xfe}) // spins forever, no agent
	cfg := writeConfig(t, dir, kernel, "")
	ctl := filepath.Join(dir, "control.sock")

	exited := make(chan int, 1)
	go func() {
		var out, errb bytes.Buffer
		exited <- runMain([]string{"run", cfg, "--log-level", "warn"}, &out, &errb)
	}()
	// The control socket answers before the vCPUs run (runstate
	// "created"); a suspend then is refused for another reason.
	require.Eventually(t, func() bool {
		var o, e bytes.Buffer
		return cmdStatus([]string{"x", "--control", ctl}, &o, &e) == 0 && strings.Contains(o.String(), "runstate:  running")
	}, 10*time.Second, 20*time.Millisecond, "control socket comes up and the guest runs")

	var out, errb bytes.Buffer
	start := time.Now()
	code := cmdSuspend([]string{"tiny", "--control", ctl, "--timeout", "1500ms"}, &out, &errb)
	assert.Equal(t, exitFailure, code)
	assert.Less(t, time.Since(start), 10*time.Second)
	assert.Contains(t, errb.String(), "qemu-guest-agent")
	assert.Contains(t, errb.String(), "keeps running")

	out.Reset()
	require.Equal(t, 0, cmdStatus([]string{"tiny", "--control", ctl}, &out, &errb))
	assert.Contains(t, out.String(), "runstate:  running")

	out.Reset()
	require.Equal(t, 0, cmdStatus([]string{"tiny", "--control", ctl, "--json"}, &out, &errb))
	assert.Contains(t, out.String(), `"runstate": "running"`)

	out.Reset()
	assert.Equal(t, exitFailure, cmdWakeup([]string{"tiny", "--control", ctl}, &out, &errb), "a running guest cannot be woken")
	assert.Contains(t, errb.String(), "not suspended")

	resp, err := vmm.CallControl(ctl, vmm.ControlRequest{Command: "stop"})
	require.NoError(t, err)
	require.True(t, resp.OK)
	select {
	case code := <-exited:
		assert.Equal(t, exitStopped, code)
	case <-time.After(10 * time.Second):
		t.Fatal("pmvm run did not exit after stop")
	}
}

// TestControlSocketByName proves NAME resolves under the runtime directory.
func TestControlSocketByName(t *testing.T) {
	t.Setenv("PMVM_RUNTIME_DIR", "/tmp/rt")
	assert.Equal(t, "/tmp/rt/web1/control.sock", controlSocket("web1", ""))
	assert.Equal(t, "/x/c.sock", controlSocket("web1", "/x/c.sock"))
	assert.Equal(t, "./c.sock", controlSocket("./c.sock", ""))
}

// TestRunRefusesVolatileRAMInRebootMode proves pmvm run will not start a
// reboot-mode VM on anonymous RAM, naming the block and what to use instead,
// before anything is mapped or started.
func TestRunRefusesVolatileRAMInRebootMode(t *testing.T) {
	dir := t.TempDir()
	kernel := tinyKernel(t, dir, []byte{0xeb, 0xfe})
	var out, errb bytes.Buffer
	code := runMain([]string{"run", writeConfig(t, dir, kernel, `mode = "reboot"`), "--log-level", "error"}, &out, &errb)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errb.String(), `"ram0"`)
	assert.Contains(t, errb.String(), "volatile")
	assert.Contains(t, errb.String(), "/dev/dax")
	assert.NoFileExists(t, filepath.Join(dir, "control.sock"), "nothing started")
	assert.NoFileExists(t, filepath.Join(dir, "agent.sock"), "nothing started")
}
