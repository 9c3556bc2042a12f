package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/cgroup"
)

// cgroupFiles is where the kernel keeps a VM cgroup's limits and
// processes, from a /proc/.../cgroup of a process in it.
type cgroupFiles struct {
	limits map[string]string // file -> content
	procs  string            // cgroup.procs of one of its directories
}

// vmCgroupFiles checks that the /proc/.../cgroup file at procFile puts its
// process exactly in VM name's cgroup under the relative parent (in each
// hierarchy the VM's cgroup uses) and returns its limit files holding
// weight, memory and pids.
func vmCgroupFiles(t *testing.T, procFile, name, parent string, weight, memory, pids uint64) cgroupFiles {
	t.Helper()
	v1, v2, err := cgroups.ParseCgroupFileUnified(procFile)
	require.NoError(t, err)
	f := cgroupFiles{limits: map[string]string{}}
	if cgroup.DetectMode() == cgroup.Unified {
		require.True(t, strings.HasSuffix(v2, "/"+parent+"/"+name+".scope"), "%s: in %q", procFile, v2)
		dir := filepath.Join("/sys/fs/cgroup", v2)
		f.limits[filepath.Join(dir, "cpu.weight")] = fmt.Sprint(weight)
		f.limits[filepath.Join(dir, "memory.max")] = fmt.Sprint(memory)
		f.limits[filepath.Join(dir, "pids.max")] = fmt.Sprint(pids)
		f.procs = filepath.Join(dir, "cgroup.procs")
		return f
	}
	for _, ctl := range []string{"cpu", "memory", "pids"} {
		require.True(t, strings.HasSuffix(v1[ctl], "/"+parent+"/"+name), "%s: %s cgroup %q", procFile, ctl, v1[ctl])
	}
	f.limits[filepath.Join("/sys/fs/cgroup/cpu", v1["cpu"], "cpu.shares")] = fmt.Sprint(cgroup.CPUShares(weight))
	f.limits[filepath.Join("/sys/fs/cgroup/memory", v1["memory"], "memory.limit_in_bytes")] = fmt.Sprint(memory)
	f.limits[filepath.Join("/sys/fs/cgroup/pids", v1["pids"], "pids.max")] = fmt.Sprint(pids)
	f.procs = filepath.Join("/sys/fs/cgroup/pids", v1["pids"], "cgroup.procs")
	return f
}

// keepOwnCgroups moves this test process back, when the test ends, into
// the cgroups it is in now: pmvm run in this process moves it into its
// VM's.
func keepOwnCgroups(t *testing.T) {
	v1, v2, err := cgroups.ParseCgroupFileUnified("/proc/self/cgroup")
	require.NoError(t, err)
	var files []string
	if cgroup.DetectMode() == cgroup.Unified {
		files = append(files, filepath.Join("/sys/fs/cgroup", v2, "cgroup.procs"))
	} else {
		for _, ctl := range []string{"cpu", "memory", "pids"} {
			files = append(files, filepath.Join("/sys/fs/cgroup", ctl, v1[ctl], "cgroup.procs"))
		}
	}
	t.Cleanup(func() {
		for _, f := range files {
			if err := os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
				t.Errorf("moving this test process back to %s: %v", f, err)
			}
		}
	})
}

// TestRunJoinsVMCgroup proves, for real on this machine's cgroups (v1
// hybrid here), that pmvm run with a host config enabling cgroups runs the
// VM in its own cgroup, made by the code a restore uses: first, with
// another process in the VM's cgroup (a VM of that name still running),
// pmvm run refuses before starting anything, naming that process and
// what to do, and stays where it was; then it moves its process (every
// thread, the vCPU threads too) into parent/<name> with the limits the VM
// config's [limits] sets (cpu_weight, pids) and the host config's default
// for the one it leaves out (memory = guest RAM + vmm_memory_overhead).
func TestRunJoinsVMCgroup(t *testing.T) {
	require.NotEqual(t, cgroup.Unavailable, cgroup.DetectMode(), "no cgroup filesystem at /sys/fs/cgroup: this test needs one (root, cgroupfs mounted)")
	dir := t.TempDir()
	parent := fmt.Sprintf("pmvm-run-test-%d-%d", os.Getpid(), time.Now().UnixNano()%100000)
	hostConfig := filepath.Join(dir, "host.toml")
	require.NoError(t, os.WriteFile(hostConfig, []byte(fmt.Sprintf("[limits]\ncgroup_parent = %q\ncpu_weight = 100\nvmm_memory_overhead = \"256MiB\"\npids = 1024\n", parent)), 0o644))
	cfg := writeConfig(t, dir, tinyKernel(t, dir, []byte{0xeb, 0xfe}), "[limits]\ncpu_weight = 50\npids = 512")
	control := filepath.Join(dir, "control.sock")
	t.Cleanup(func() { removeCgroups(t, parent) })
	keepOwnCgroups(t) // runs before removeCgroups
	ownBefore := readFile(t, "/proc/self/cgroup")

	// A VM of that name still runs: its cgroup holds a process.
	cg, err := cgroup.New("tiny", parent, cgroup.Limits{})
	require.NoError(t, err)
	other := exec.Command("/bin/sleep", "60")
	require.NoError(t, other.Start())
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	require.NoError(t, cg.AddProc(other.Process.Pid))
	var out, errb bytes.Buffer
	code := runMain([]string{"run", cfg, "--host-config", hostConfig, "--log-level", "error"}, &out, &errb)
	assert.Equal(t, exitFailure, code)
	assert.Contains(t, errb.String(), fmt.Sprintf("already holds processes [%d]", other.Process.Pid))
	assert.Contains(t, errb.String(), `is VM "tiny" running already? Stop it first`)
	assert.Contains(t, errb.String(), "nothing was started")
	assert.NoFileExists(t, control, "nothing started")
	assert.Equal(t, ownBefore, readFile(t, "/proc/self/cgroup"), "the refused pmvm run moved nowhere")
	other.Process.Kill()
	other.Wait()

	exited := make(chan int, 1)
	var runErr bytes.Buffer
	go func() {
		var out bytes.Buffer
		exited <- runMain([]string{"run", cfg, "--host-config", hostConfig, "--log-level", "info"}, &out, &runErr)
	}()
	require.Eventually(t, func() bool {
		resp, err := vmm.CallControl(control, vmm.ControlRequest{Command: "status", Timeout: 2000})
		return err == nil && resp.Status != nil && resp.Status.RunState == vmm.StateRunning
	}, 15*time.Second, 20*time.Millisecond, "the VM runs")

	files := vmCgroupFiles(t, "/proc/self/cgroup", "tiny", parent, 50, (64+256)<<20, 512)
	for file, want := range files.limits {
		assert.Equal(t, want, strings.TrimSpace(readFile(t, file)), file)
	}
	assert.Contains(t, strings.Fields(readFile(t, files.procs)), strconv.Itoa(os.Getpid()), "%s lists this process", files.procs)
	tasks, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	for _, task := range tasks {
		p := filepath.Join("/proc/self/task", task.Name(), "cgroup")
		if _, err := os.Stat(p); err == nil { // a thread may just have ended
			vmCgroupFiles(t, p, "tiny", parent, 50, (64+256)<<20, 512)
		}
	}

	resp, err := vmm.CallControl(control, vmm.ControlRequest{Command: "stop"})
	require.NoError(t, err)
	require.True(t, resp.OK)
	select {
	case code := <-exited:
		assert.Equal(t, exitStopped, code, runErr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("pmvm run did not exit after stop")
	}
	assert.Contains(t, runErr.String(), "running in the VM's cgroup")
	assert.Contains(t, runErr.String(), "cpu_weight 50, memory 320MiB, pids 512")
}

// TestRunHostConfigChoices proves where pmvm run takes its host config
// from and what it does without one: no host config at the path it looks
// at (--host-config, else $PMVM_HOST_CONFIG) is not an error, the VM runs
// and pmvm says at info level that it makes no cgroup; a host config with
// cgroups = false makes none either; an invalid host config is refused
// (exit 2) naming the file, line and key, before anything starts; a host
// config too tight for the VM's threads is refused saying what to raise.
// None of them moves this process.
func TestRunHostConfigChoices(t *testing.T) {
	dir := t.TempDir()
	kernel := tinyKernel(t, dir, []byte{0x66, 0xb8, 0x00, 0x34, 0x66, 0xba, 0x04, 0x06, 0x66, 0xef, 0xeb, 0xfe}) // S5 at once
	cfg := writeConfig(t, dir, kernel, "")
	off := filepath.Join(dir, "off.toml")
	require.NoError(t, os.WriteFile(off, []byte("[limits]\ncgroups = false\n"), 0o644))
	bad := filepath.Join(dir, "bad.toml")
	require.NoError(t, os.WriteFile(bad, []byte("[limits]\npid = 100\n"), 0o644))
	tight := filepath.Join(dir, "tight.toml")
	require.NoError(t, os.WriteFile(tight, []byte("[limits]\ncgroup_parent = \"pmvm-never-made\"\npids = 10\n"), 0o644))
	missing := filepath.Join(dir, "missing.toml")
	own := readFile(t, "/proc/self/cgroup")

	for _, tc := range []struct {
		proves string
		flag   string // --host-config
		env    string // $PMVM_HOST_CONFIG
		code   int
		want   []string
	}{
		{"no file at --host-config", missing, "", exitPowerOff, []string{"no host config (--host-config)", missing, "no cgroup of the VM's own"}},
		{"no file at $PMVM_HOST_CONFIG", "", missing, exitPowerOff, []string{"no host config ($PMVM_HOST_CONFIG)"}},
		{"$PMVM_HOST_CONFIG names it", "", off, exitPowerOff, []string{"cgroups = false in the host config", off}},
		{"--host-config wins over $PMVM_HOST_CONFIG", off, bad, exitPowerOff, []string{"cgroups = false in the host config"}},
		{"invalid host config", bad, "", exitUsage, []string{"invalid host config", bad + `:2: unknown key "pid" in [limits]`}},
		{"pids too low", tight, "", exitFailure, []string{`the host config's [limits] pids = 10 is too low for VM "tiny" with 1 vCPU(s): pmvm needs at least 65`, "raise it", tight}},
	} {
		t.Setenv(hostConfigEnv, tc.env)
		args := []string{"run", cfg, "--log-level", "info"}
		if tc.flag != "" {
			args = append(args, "--host-config", tc.flag)
		}
		var out, errb bytes.Buffer
		code := runMain(args, &out, &errb)
		assert.Equal(t, tc.code, code, "%s: %s", tc.proves, errb.String())
		for _, w := range tc.want {
			assert.Contains(t, errb.String(), w, tc.proves)
		}
		assert.Equal(t, own, readFile(t, "/proc/self/cgroup"), "%s: this process moved nowhere", tc.proves)
	}
}
