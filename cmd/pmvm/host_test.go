package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/kexec"
	"github.com/pmvm/pmvm/qa/labrun"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/acpi"
	"github.com/pmvm/pmvm/vmm/x86"
	"github.com/pmvm/pmvm/vmm/x86/x86test"
)

// hostHelperEnv makes this test binary act as the pmvm binary (see
// TestHostHelperPMVM): `pmvm host restore` starts restored VMs with it.
const hostHelperEnv = "PMVM_HOST_TEST_HELPER"

// TestHostHelperPMVM is not a test: when hostHelperEnv is set it runs
// runMain with the arguments after "--" and exits with its code, so that a
// restore can start `pmvm run CONFIG --incoming STATE` as a real process
// of its own. In a normal test run it returns at once.
func TestHostHelperPMVM(t *testing.T) {
	if os.Getenv(hostHelperEnv) != "1" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(runMain(args, os.Stdout, os.Stderr))
}

// useHelperPMVM makes restores run this test binary as pmvm.
func useHelperPMVM(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	old := pmvmCommand
	pmvmCommand = func() ([]string, error) {
		return []string{"/usr/bin/env", hostHelperEnv + "=1", exe, "-test.run=^TestHostHelperPMVM$", "--"}, nil
	}
	t.Cleanup(func() { pmvmCommand = old })
}

const hostWakeVector = 0x30000

// hostSuspendingKernel is a tiny guest that sets the FACS waking vector,
// leaves the marker 'M' in RAM, prints 'S' and enters S3.
func hostSuspendingKernel(t *testing.T, dir string) string {
	tables, err := acpi.Build(vmm.ACPIConfig(1), x86.ACPITablesAddr)
	require.NoError(t, err)
	code := []byte{0xc7, 0x04, 0x25}
	code = binary.LittleEndian.AppendUint32(code, uint32(tables.FACS+acpi.FACSFirmwareWakingVectorOffset))
	code = binary.LittleEndian.AppendUint32(code, hostWakeVector)              // mov dword [FACS+12], 0x30000
	code = append(code, x86test.StoreBytes(hostWakeVector, hostResumeCode)...) // its resume code, as an OS does
	code = append(code,
		0xc6, 0x04, 0x25, 0x00, 0x00, 0x04, 0x00, 'M', // mov byte [0x40000], 'M'
		0x66, 0xba, 0xf8, 0x03, 0xb0, 'S', 0xee, // out 'S' to COM1
		0x66, 0xb8, 0x00, 0x2c, // mov ax, SLP_TYP=3|SLP_EN
		0x66, 0xba, 0x04, 0x06, 0x66, 0xef, // out to PM1a_CNT
		0xeb, 0xfe)
	return tinyKernel(t, dir, code)
}

// hostResumeCode runs at the waking vector: it prints 'W', the marker left
// in RAM before the save and PM1_STS's high byte (WAK_STS = 0x80), then
// keeps running (a VM that powered off at once could not be seen running).
var hostResumeCode = []byte{
	0xba, 0xf8, 0x03, 0xb0, 'W', 0xee, // out 'W'
	0xb8, 0x00, 0x40, 0x8e, 0xd8, // mov ax, 0x4000; mov ds, ax
	0xa0, 0x00, 0x00, 0xee, // mov al, [0]; out (the marker)
	0xba, 0x00, 0x06, 0xed, 0x88, 0xe0, // in ax, PM1_STS; mov al, ah
	0xba, 0xf8, 0x03, 0xee, // out
	0xeb, 0xfe, // jmp $
}

// hostVM is one tiny guest of a host test.
type hostVM struct {
	name, dir, config, control, console, backing string
	exited                                       chan int
}

// hostLab is a host config and its directories under /var/tmp (state_dir
// must not be under /tmp, which does not survive a reboot).
type hostLab struct {
	root, vmDir, stateDir, logDir, runDir, hostConfig, hooksLog, cgroupParent string
}

func newHostLab(t *testing.T, withHooks bool) *hostLab {
	root, err := os.MkdirTemp("/var/tmp", "pmvm-host-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	l := &hostLab{root: root, vmDir: filepath.Join(root, "vms"), stateDir: filepath.Join(root, "state"),
		logDir: filepath.Join(root, "log"), runDir: filepath.Join(root, "run"), hooksLog: filepath.Join(root, "hooks.log"),
		cgroupParent: fmt.Sprintf("pmvm-host-test-%d-%d", os.Getpid(), time.Now().UnixNano()%100000)}
	require.NoError(t, os.MkdirAll(l.vmDir, 0o755))
	hook := filepath.Join(root, "hook.sh")
	require.NoError(t, os.WriteFile(hook, []byte("#!/bin/sh\necho \"$PMVM_PHASE|$PMVM_VM|$PMVM_STATE|$PMVM_KERNEL|$PMVM_TIMELINE\" >> "+l.hooksLog+"\n"), 0o755))
	doc := fmt.Sprintf(`vm_dir = %q
state_dir = %q
runtime_dir = %q
log_dir = %q
save_timeout = "30s"
restore_timeout = "30s"
`, l.vmDir, l.stateDir, l.runDir, l.logDir)
	if withHooks {
		for _, phase := range []string{"pre-save", "pre-kexec", "post-restore", "on-failure"} {
			doc += fmt.Sprintf("[hooks.%s]\ncommand = [%q]\ntimeout = \"10s\"\n", phase, hook)
		}
	}
	// Nested under this test's own cgroups: nothing outside them is touched.
	doc += fmt.Sprintf("[limits]\ncgroup_parent = %q\ncpu_weight = 100\nvmm_memory_overhead = \"256MiB\"\npids = 1024\n", l.cgroupParent)
	l.hostConfig = filepath.Join(root, "host.toml")
	require.NoError(t, os.WriteFile(l.hostConfig, []byte(doc), 0o644))
	t.Cleanup(func() { removeCgroups(t, l.cgroupParent) })
	return l
}

// removeCgroups removes the VM cgroups a restore left under parent. The
// VMs in them were told to stop; any process still inside after a grace
// period is a restored VM of this test, and is killed.
func removeCgroups(t *testing.T, parent string) {
	var dirs []string
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if d.Name() == parent {
			dirs = append(dirs, p)
			return filepath.SkipDir
		}
		return nil
	})
	for _, d := range dirs {
		subs, _ := os.ReadDir(d)
		for _, s := range subs {
			if !s.IsDir() {
				continue
			}
			leaf := filepath.Join(d, s.Name())
			deadline := time.Now().Add(10 * time.Second)
			for {
				// Never this test process: a test that ran pmvm run in
				// it moves it back itself.
				procs := slices.DeleteFunc(strings.Fields(readFileOrEmpty(filepath.Join(leaf, "cgroup.procs"))),
					func(p string) bool { return p == strconv.Itoa(os.Getpid()) })
				if len(procs) == 0 {
					break
				}
				if time.Now().After(deadline) {
					for _, p := range procs {
						if pid, err := strconv.Atoi(p); err == nil {
							t.Logf("cgroup cleanup: killing leftover VM process %d", pid)
							unix.Kill(pid, unix.SIGKILL)
						}
					}
					deadline = time.Now().Add(5 * time.Second)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := os.Remove(leaf); err != nil {
				t.Logf("cgroup cleanup: %v", err)
			}
		}
		os.Remove(d)
	}
}

// addVM writes a tiny guest's config into vm_dir. reboot: mode "reboot" on
// a /dev/shm file declared preserved across kexec (the guest suspends
// itself at boot); otherwise mode "none" on anonymous RAM with a guest
// that just runs.
func (l *hostLab) addVM(t *testing.T, name string, reboot bool) *hostVM {
	v := &hostVM{name: name, dir: filepath.Join(l.root, name), exited: make(chan int, 1)}
	require.NoError(t, os.MkdirAll(v.dir, 0o755))
	v.config = filepath.Join(l.vmDir, name+".toml")
	v.control = filepath.Join(v.dir, "control.sock")
	v.console = filepath.Join(v.dir, "console.log")
	mode, memory, kernel := "none", `backing = "anonymous"`, ""
	if reboot {
		kernel = hostSuspendingKernel(t, v.dir)
		v.backing = fmt.Sprintf("/dev/shm/pmvm-host-test-%d-%s-%s", os.Getpid(), filepath.Base(l.root), name)
		f, err := os.OpenFile(v.backing, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		require.NoError(t, err, "/dev/shm must be a writable tmpfs")
		t.Cleanup(func() { os.Remove(v.backing) })
		require.NoError(t, f.Truncate(64<<20))
		require.NoError(t, f.Close())
		mode = "reboot"
		memory = fmt.Sprintf("backing = %q\nshared = true\npreserved_across_kexec = true", v.backing)
	} else {
		kernel = tinyKernel(t, v.dir, []byte{0xeb, 0xfe})
	}
	doc := fmt.Sprintf(`name = %q
mode = %q
vcpus = 1
[boot]
kernel = %q
[[memory]]
name = "ram0"
size = "64MiB"
%s
[console]
output = "file"
path = %q
[agent]
socket = %q
[control]
socket = %q
`, name, mode, kernel, memory, v.console, filepath.Join(v.dir, "agent.sock"), v.control)
	require.NoError(t, os.WriteFile(v.config, []byte(doc), 0o644))
	return v
}

// start runs the VM in this process, like `pmvm run CONFIG`, and waits
// until its control socket reports want.
func (v *hostVM) start(t *testing.T, want vmm.RunState) {
	go func() {
		var out, errb bytes.Buffer
		v.exited <- runMain([]string{"run", v.config, "--log-level", "error"}, &out, &errb)
	}()
	t.Cleanup(func() { vmm.CallControl(v.control, vmm.ControlRequest{Command: "stop", Timeout: 2000}) })
	require.Eventually(t, func() bool { return v.runstate() == want }, 15*time.Second, 10*time.Millisecond, "VM %s reaches %s", v.name, want)
}

func (v *hostVM) runstate() vmm.RunState {
	resp, err := vmm.CallControl(v.control, vmm.ControlRequest{Command: "status", Timeout: 2000})
	if err != nil || resp.Status == nil {
		return ""
	}
	return resp.Status.RunState
}

// stopRestored stops a VM that a restore started as its own process and
// waits until it is gone.
func (v *hostVM) stopRestored(t *testing.T, pid int) {
	vmm.CallControl(v.control, vmm.ControlRequest{Command: "stop", Timeout: 2000})
	if pid == 0 {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if unix.Kill(pid, 0) != nil || zombie(pid) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	unix.Kill(pid, unix.SIGKILL)
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// hostKernel is the kernel an update test asks for: the lab's Debian
// bzImage when it is cached, else a tiny guest image made loadable-looking
// (64-bit, above 4 GiB) for the plan's header check.
func hostKernel(t *testing.T, dir string) string {
	if k := os.Getenv(labrun.KernelEnv); k != "" { // in a lab host: a kernel its kexec_file_load takes
		return k
	}
	m, _ := filepath.Glob(filepath.Join("..", "..", ".cache", "extract", "linux-image-*-amd64", "boot", "vmlinuz-*"))
	if len(m) > 0 {
		abs, err := filepath.Abs(m[0])
		require.NoError(t, err)
		return abs
	}
	k := tinyKernel(t, dir, []byte{0xeb, 0xfe})
	f, err := os.OpenFile(k, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0x03}, 0x236)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return k
}

// kexecSeams replaces the kexec calls for a test: status and load go to
// this host's kernel for real, except that a kernel without kexec_file_load
// (ENOSYS, like this build machine's) is reported loudly and treated as
// loaded; Reboot must never be reached. loadErr, when set, fails the load.
type kexecSeams struct {
	t          *testing.T
	loadErr    error
	realLoaded bool
	loads      int
}

func installKexecSeams(t *testing.T, loadErr error) *kexecSeams {
	s := &kexecSeams{t: t, loadErr: loadErr}
	kexecStatus = func() kexec.Status {
		st := kexec.HostStatus()
		if st.Problem != "" {
			t.Logf("THIS HOST CANNOT KEXEC (%s): the plan is told it can, and kexec_file_load's ENOSYS is taken as a load; the lab runs the real thing", st.Problem)
			return kexec.Status{Supported: true}
		}
		return st
	}
	kexecLoad = func(k, i, c string) error {
		s.loads++
		if s.loadErr != nil {
			return s.loadErr
		}
		err := kexec.LoadFile(k, i, c)
		if errors.Is(err, syscall.ENOSYS) {
			t.Logf("kexec_file_load: %v (taken as loaded)", err)
			return nil
		}
		if err == nil {
			s.realLoaded = true
		}
		return err
	}
	kexecUnload = func() error {
		if s.realLoaded {
			s.realLoaded = false
			return kexec.Unload()
		}
		return nil
	}
	kexecReboot = func() error {
		t.Error("a test must never reboot the host")
		return errors.New("reboot refused by the test")
	}
	t.Cleanup(func() {
		if s.realLoaded {
			kexec.Unload()
		}
		kexecStatus, kexecLoad, kexecUnload, kexecReboot = nil, nil, nil, nil
	})
	return s
}

var runningPID = regexp.MustCompile(`(?m)^(\S+): running \(pid (\d+)\)`)

// restoredPIDs reads "NAME: running (pid N)" lines of a restore report.
func restoredPIDs(out string) map[string]int {
	pids := map[string]int{}
	for _, m := range runningPID.FindAllStringSubmatch(out, -1) {
		pids[m[1]], _ = strconv.Atoi(m[2])
	}
	return pids
}

// TestHostUpdateAndRestoreTinyGuests proves the host update end to end on
// /dev/kvm, short of the reboot: two real reboot-mode VMs (tiny guests on
// /dev/shm files declared preserved across kexec, suspended) are carried
// by `pmvm host update --no-reboot`: both saved in parallel (their pmvm
// runs exit 0, state files written), the kernel handed to kexec_file_load
// (for real; this build machine's kernel has none, which the test says),
// hooks run with the VM list, and the timeline written. `pmvm host
// restore` then starts each VM as its own process from its state file in
// its own cgroup (limits from the host config), waits for "running",
// moves the state files aside, runs post-restore per VM, and prints the
// timeline with both blackouts. Each guest wakes at its waking vector and
// finds the marker it left in RAM before the save (console "SWM\x80").
func TestHostUpdateAndRestoreTinyGuests(t *testing.T) {
	lab := newHostLab(t, true)
	a, b := lab.addVM(t, "a", true), lab.addVM(t, "b", true)
	a.start(t, vmm.StateSuspended)
	b.start(t, vmm.StateSuspended)
	kernel := hostKernel(t, lab.root)
	installKexecSeams(t, nil)

	var out, errb bytes.Buffer
	code := cmdHost([]string{"update", "--config", lab.hostConfig, "--kernel", kernel, "--reuse-cmdline", "--no-reboot"}, &out, &errb)
	t.Log("\n" + out.String() + errb.String())
	require.Equal(t, 0, code, errb.String())
	for _, v := range []*hostVM{a, b} {
		select {
		case c := <-v.exited:
			assert.Equal(t, exitPowerOff, c, "VM %s's pmvm exits 0 after its save", v.name)
		case <-time.After(10 * time.Second):
			t.Fatalf("VM %s's pmvm did not exit after the save", v.name)
		}
		assert.FileExists(t, filepath.Join(lab.stateDir, v.name+".state"))
	}
	assert.Contains(t, out.String(), "the update would save 2 VM(s)")
	assert.Contains(t, out.String(), "not rebooting (--no-reboot)")
	assert.FileExists(t, filepath.Join(lab.stateDir, "update-timeline.json"))
	hooks := readFile(t, lab.hooksLog)
	statesList := filepath.Join(lab.stateDir, "a.state") + "," + filepath.Join(lab.stateDir, "b.state")
	timeline := filepath.Join(lab.stateDir, "update-timeline.json")
	assert.Contains(t, hooks, "pre-save|a,b|"+statesList+"|"+kernel+"|"+timeline)
	assert.Contains(t, hooks, "pre-kexec|a,b|"+statesList+"|"+kernel+"|")

	// "after the kexec"
	useHelperPMVM(t)
	out.Reset()
	errb.Reset()
	code = cmdHost([]string{"restore", "--config", lab.hostConfig}, &out, &errb)
	t.Log("\n" + out.String() + errb.String())
	pids := restoredPIDs(out.String())
	t.Cleanup(func() {
		a.stopRestored(t, pids["a"])
		b.stopRestored(t, pids["b"])
	})
	require.Equal(t, 0, code, errb.String())
	require.Len(t, pids, 2, "both VMs run again")
	for _, v := range []*hostVM{a, b} {
		assert.Equal(t, vmm.StateRunning, v.runstate(), v.name)
		assert.Eventually(t, func() bool { return readFileOrEmpty(v.console) == "SWM\x80" }, 5*time.Second, 10*time.Millisecond,
			"VM %s woke at its vector with its memory intact (console %q)", v.name, readFileOrEmpty(v.console))
		assert.NoFileExists(t, filepath.Join(lab.stateDir, v.name+".state"))
		moved, _ := filepath.Glob(filepath.Join(lab.stateDir, v.name+".state.resumed-*"))
		assert.Len(t, moved, 1, "the state file of %s is moved aside, not deleted", v.name)
		// The restored pmvm prints its resume timeline just after it
		// reports running, which is when the restore returns.
		assert.Eventually(t, func() bool {
			return strings.Contains(readFileOrEmpty(filepath.Join(lab.logDir, v.name+".log")), "vCPUs running")
		}, 5*time.Second, 10*time.Millisecond, "its pmvm's output goes to log_dir/%s.log", v.name)
		assert.Regexp(t, "post-restore\\|"+v.name+"\\|"+regexp.QuoteMeta(filepath.Join(lab.stateDir, v.name+".state.resumed-")), readFile(t, lab.hooksLog))
		cg := readFile(t, fmt.Sprintf("/proc/%d/cgroup", pids[v.name]))
		assert.Contains(t, cg, lab.cgroupParent+"/"+v.name, "VM %s's pmvm runs in its own cgroup:\n%s", v.name, cg)
		assert.NotContains(t, cg, lab.cgroupParent+"/"+v.name+"/", "it stays in the cgroup restore started it in, not one nested below")
		cmdline := strings.ReplaceAll(readFile(t, fmt.Sprintf("/proc/%d/cmdline", pids[v.name])), "\x00", " ")
		assert.Contains(t, cmdline, "--host-config "+lab.hostConfig, "restore gives pmvm run its own host config")
		assert.Contains(t, readFile(t, filepath.Join(lab.logDir, v.name+".log")), "running in the VM's cgroup", "pmvm run took the cgroup from that host config")
		assert.Equal(t, pids[v.name], syscallGetsid(pids[v.name]), "VM %s's pmvm leads its own session", v.name)
	}
	assert.Contains(t, out.String(), "blackout (save requested -> running again):")
	assert.Regexp(t, `(?m)^  a  \d`, out.String())
	assert.Regexp(t, `(?m)^  b  \d`, out.String())
	assert.NoFileExists(t, timeline, "the complete update's timeline is archived")
	assert.Contains(t, readFile(t, filepath.Join(lab.logDir, "host.log")), "hook succeeded", "log_dir/host.log records the update and restore")
	hostLog := readFile(t, filepath.Join(lab.logDir, "host.log"))
	assert.Regexp(t, `"step":"running","vm":"a","detail":"woken from S3, pid \d+","time":"[^"]+","message":"timeline step"`, hostLog, "host.log holds the timeline")
	assert.Regexp(t, `"vm":"b","running_again":true,"blackout":[\d.]+,"time":"[^"]+","message":"blackout"`, hostLog, "and each VM's blackout")
}

func syscallGetsid(pid int) int {
	sid, err := unix.Getsid(pid)
	if err != nil {
		return -1
	}
	return sid
}

func readFileOrEmpty(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// TestHostUpdateRollbackResumesRealGuests proves the rollback with real
// guests: both VMs are saved (their pmvm exit), then kexec_file_load fails;
// the update brings both back from their state files as processes of
// their own (pmvm run --incoming), they run again with their memory intact,
// the on-failure hook runs, nothing is kexec'd, and the exit code says the
// rollback is complete (1).
func TestHostUpdateRollbackResumesRealGuests(t *testing.T) {
	lab := newHostLab(t, true)
	a, b := lab.addVM(t, "a", true), lab.addVM(t, "b", true)
	a.start(t, vmm.StateSuspended)
	b.start(t, vmm.StateSuspended)
	seams := installKexecSeams(t, errors.New("kexec: kexec_file_load: operation not permitted: the kernel is locked down (test)"))
	useHelperPMVM(t)

	var out, errb bytes.Buffer
	code := cmdHost([]string{"update", "--config", lab.hostConfig, "--kernel", hostKernel(t, lab.root), "--cmdline", "console=ttyS0"}, &out, &errb)
	t.Log("\n" + out.String() + errb.String())
	t.Cleanup(func() {
		a.stopRestored(t, 0)
		b.stopRestored(t, 0)
	})
	assert.Equal(t, exitFailure, code)
	assert.Equal(t, 1, seams.loads)
	assert.Contains(t, errb.String(), "rolled back: every VM runs as before")
	assert.Contains(t, errb.String(), "locked down (test)")
	for _, v := range []*hostVM{a, b} {
		select {
		case c := <-v.exited:
			assert.Equal(t, exitPowerOff, c, "VM %s was saved first", v.name)
		case <-time.After(10 * time.Second):
			t.Fatalf("VM %s's pmvm did not exit after its save", v.name)
		}
		assert.Equal(t, vmm.StateRunning, v.runstate(), "VM %s runs again", v.name)
		assert.Eventually(t, func() bool { return readFileOrEmpty(v.console) == "SWM\x80" }, 5*time.Second, 10*time.Millisecond,
			"VM %s resumed with its memory intact (console %q)", v.name, readFileOrEmpty(v.console))
		moved, _ := filepath.Glob(filepath.Join(lab.stateDir, v.name+".state.resumed-*"))
		assert.Len(t, moved, 1)
	}
	assert.Contains(t, readFile(t, lab.hooksLog), "on-failure|a,b|")
}

// TestHostUpdateRefusesUnsaveableVM proves that `pmvm host update` (dry
// run or not) refuses before suspending anything when a running VM cannot
// be preserved (mode "none" on anonymous RAM), naming it and why: the
// reboot-mode VM next to it is neither saved nor touched (still suspended,
// no state file), the other keeps running, no hook runs. Without the kexec
// seams the plan also reports this host's own kexec support as it is.
func TestHostUpdateRefusesUnsaveableVM(t *testing.T) {
	lab := newHostLab(t, true)
	keep := lab.addVM(t, "keep", true)
	plain := lab.addVM(t, "plain", false)
	keep.start(t, vmm.StateSuspended)
	plain.start(t, vmm.StateRunning)
	kernel := hostKernel(t, lab.root)

	for _, dry := range []bool{true, false} {
		args := []string{"update", "--config", lab.hostConfig, "--kernel", kernel, "--cmdline", "console=ttyS0"}
		if dry {
			args = append(args, "--dry-run")
		}
		var out, errb bytes.Buffer
		code := cmdHost(args, &out, &errb)
		t.Log("\n" + out.String() + errb.String())
		assert.Equal(t, exitFailure, code)
		assert.Contains(t, out.String(), "refused before anything was suspended")
		assert.Contains(t, out.String(), `VM "plain"`)
		assert.Contains(t, out.String(), `its mode is "none"`)
		assert.NotContains(t, out.String(), `VM "keep"`)
		if st := kexec.HostStatus(); st.Problem != "" {
			assert.Contains(t, out.String(), "this host cannot kexec", "the plan reports this host's missing kexec")
		}
		assert.Equal(t, vmm.StateSuspended, keep.runstate(), "the reboot-mode VM was not saved")
		assert.Equal(t, vmm.StateRunning, plain.runstate())
		assert.NoFileExists(t, filepath.Join(lab.stateDir, "keep.state"))
		assert.NoFileExists(t, lab.hooksLog, "no hook ran")
	}
}

// TestHostUpdateDryRunTouchesNothing proves that --dry-run on a plan that
// would go ahead prints it and exits 0 having done none of it: both VMs
// keep their runstate, no state file, no hook, no kernel loaded.
func TestHostUpdateDryRunTouchesNothing(t *testing.T) {
	lab := newHostLab(t, true)
	a := lab.addVM(t, "a", true)
	b := lab.addVM(t, "b", true)
	a.start(t, vmm.StateSuspended)
	b.start(t, vmm.StateSuspended)
	seams := installKexecSeams(t, nil)

	var out, errb bytes.Buffer
	code := cmdHost([]string{"update", "--config", lab.hostConfig, "--kernel", hostKernel(t, lab.root), "--cmdline", "console=ttyS0", "--dry-run"}, &out, &errb)
	t.Log("\n" + out.String() + errb.String())
	assert.Equal(t, 0, code)
	assert.Contains(t, out.String(), "the update would save 2 VM(s)")
	for _, v := range []*hostVM{a, b} {
		assert.Equal(t, vmm.StateSuspended, v.runstate(), "VM %s untouched", v.name)
		assert.NoFileExists(t, filepath.Join(lab.stateDir, v.name+".state"))
	}
	assert.NoFileExists(t, lab.hooksLog, "no hook ran")
	assert.Zero(t, seams.loads, "no kernel was loaded")
}

// TestHostUsage proves bad invocations of pmvm host exit 2 and say why,
// including an invalid host config (named key and line) and a missing
// explicit --config; the default config path may be missing (defaults).
func TestHostUsage(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "host.toml")
	require.NoError(t, os.WriteFile(bad, []byte("vm_dir = \"/etc/pmvm/vms\"\nstate_dri = \"/x\"\n"), 0o644))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "usage:"},
		{[]string{"upgrade"}, `unknown subcommand "upgrade"`},
		{[]string{"update", "--cmdline", "x"}, "--kernel FILE is required"},
		{[]string{"update", "--kernel", "/k"}, "--reuse-cmdline"},
		{[]string{"update", "--kernel", "/k", "--cmdline", "x", "--reuse-cmdline"}, "not both"},
		{[]string{"update", "--kernel", "/k", "--cmdline", "x", "extra"}, `unexpected argument "extra"`},
		{[]string{"update", "--kernel", "/k", "--cmdline", "x", "--config", bad}, bad + `:2: unknown key "state_dri" at top level`},
		{[]string{"restore", "--config", filepath.Join(dir, "missing.toml")}, "no such file"},
	} {
		var out, errb bytes.Buffer
		assert.Equal(t, exitUsage, cmdHost(tc.args, &out, &errb), "%v", tc.args)
		assert.Contains(t, errb.String(), tc.want, "%v", tc.args)
	}
	var out, errb bytes.Buffer
	assert.Equal(t, 0, cmdHost([]string{"help"}, &out, &errb))
	assert.Contains(t, out.String(), "pmvm host restore")
}

// TestHostUpdateSkipUnsaveableDryRun proves that --skip-unsaveable turns
// the refusal of a VM that cannot be carried over into a plan that goes
// ahead without it, naming it as killed unsaved; nothing is touched by the
// dry run.
func TestHostUpdateSkipUnsaveableDryRun(t *testing.T) {
	lab := newHostLab(t, true)
	keep := lab.addVM(t, "keep", true)
	plain := lab.addVM(t, "plain", false)
	keep.start(t, vmm.StateSuspended)
	plain.start(t, vmm.StateRunning)
	installKexecSeams(t, nil)

	var out, errb bytes.Buffer
	code := cmdHost([]string{"update", "--config", lab.hostConfig, "--kernel", hostKernel(t, lab.root), "--cmdline", "console=ttyS0", "--dry-run", "--skip-unsaveable"}, &out, &errb)
	t.Log("\n" + out.String() + errb.String())
	assert.Equal(t, 0, code)
	assert.Contains(t, out.String(), "--skip-unsaveable: the kexec will kill 1 VM(s) unsaved")
	assert.Contains(t, out.String(), `VM "plain"`)
	assert.Contains(t, out.String(), "the update would save 1 VM(s)")
	assert.Equal(t, vmm.StateSuspended, keep.runstate())
	assert.Equal(t, vmm.StateRunning, plain.runstate())
	assert.NoFileExists(t, filepath.Join(lab.stateDir, "keep.state"))
}
