package kexec

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
)

// startSleeper starts a process to move between cgroups.
func startSleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/sleep", "60")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

// TestCgroupLifecycleOnThisHost proves, for real and as root on this
// machine's hierarchy, that a VM cgroup is created with the limits
// written where the kernel reads them (v1/hybrid: cpu.shares from the
// weight, memory.limit_in_bytes = guest RAM + overhead, pids.max; v2:
// cpu.weight, memory.max, pids.max), that AddProc moves a process into it
// (its /proc/PID/cgroup says so), that a cgroup holding a process is not
// reused for a second VM of the same name, and that Delete removes it and
// the parents it created. The cgroups are nested under this test's own
// cgroup (a relative cgroup_parent), so nothing outside it is touched.
// Cgroups that cannot be used here fail the test with the reason.
func TestCgroupLifecycleOnThisHost(t *testing.T) {
	mode := DetectCgroupMode()
	require.NotEqual(t, CgroupUnavailable, mode, "no cgroup filesystem at /sys/fs/cgroup: this test needs one (root, cgroupfs mounted)")
	t.Logf("cgroup layout: %s", mode)
	cfg := &configs.VM{Name: "vm1", VCPUs: 2, Memory: []configs.Memory{{Name: "ram0", Size: configs.Size(64 * configs.MiB)}}}
	lim := LimitsFor(cfg, configs.Limits{CPUWeight: 50, VMMMemoryOverhead: configs.Size(256 * configs.MiB), Pids: 128})
	assert.Equal(t, CgroupLimits{CPUWeight: 50, MemoryMax: 320 << 20, PidsMax: 128}, lim)
	parent := fmt.Sprintf("pmvm-kexec-test-%d", os.Getpid())

	cg, err := NewCgroup("vm1", parent, lim)
	require.NoError(t, err, "creating a VM cgroup on this host (%s)", mode)
	t.Cleanup(func() { cg.Delete() })
	t.Logf("cgroup %s: %s", cg.Path, cg)
	if mode == CgroupUnified {
		dir := cg.Dir("")
		assert.Equal(t, "50", readTrim(t, filepath.Join(dir, "cpu.weight")))
		assert.Equal(t, "335544320", readTrim(t, filepath.Join(dir, "memory.max")))
		assert.Equal(t, "128", readTrim(t, filepath.Join(dir, "pids.max")))
	} else {
		require.Contains(t, cg.Dirs, "memory")
		assert.Equal(t, "512", readTrim(t, filepath.Join(cg.Dir("cpu"), "cpu.shares")))
		assert.Equal(t, "335544320", readTrim(t, filepath.Join(cg.Dir("memory"), "memory.limit_in_bytes")))
		assert.Equal(t, "128", readTrim(t, filepath.Join(cg.Dir("pids"), "pids.max")))
	}

	p := startSleeper(t)
	require.NoError(t, cg.AddProc(p.Process.Pid))
	procs, err := cg.Procs()
	require.NoError(t, err)
	assert.Equal(t, []int{p.Process.Pid}, procs)
	own := readTrim(t, fmt.Sprintf("/proc/%d/cgroup", p.Process.Pid))
	for ctl := range cg.Dirs {
		found := false
		for _, line := range strings.Split(own, "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) == 3 && (ctl == "" && parts[1] == "" || hasWord(strings.ReplaceAll(parts[1], ",", " "), ctl)) {
				found = strings.HasSuffix(parts[2], "/"+parent+"/vm1") || strings.HasSuffix(parts[2], "/"+parent+"/vm1.scope")
			}
		}
		assert.True(t, found, "/proc/%d/cgroup puts it in %s/vm1 for %q:\n%s", p.Process.Pid, parent, ctl, own)
	}

	_, err = NewCgroup("vm1", parent, lim)
	assert.ErrorContains(t, err, "already holds processes", "a running VM's cgroup is not reused")

	p.Process.Kill()
	p.Wait()
	require.NoError(t, cg.Delete())
	for _, dir := range cg.Dirs {
		assert.NoDirExists(t, dir)
		assert.NoDirExists(t, filepath.Dir(dir), "the parent NewCgroup created is removed too")
	}
}

// TestCgroupV2LayoutOnUnifiedMount proves the cgroup v2 code path for real
// where this host has a v2 hierarchy: the hybrid layout's
// /sys/fs/cgroup/unified (which has no controllers) or the unified root.
// Without limits a VM cgroup is created, takes a process and is deleted;
// with a limit whose controller the hierarchy lacks, creation is refused
// naming the controller.
func TestCgroupV2LayoutOnUnifiedMount(t *testing.T) {
	mounts, err := cgroupMounts()
	require.NoError(t, err)
	require.NotNil(t, mounts.v2, "no cgroup v2 hierarchy mounted on this host (neither /sys/fs/cgroup nor /sys/fs/cgroup/unified)")
	own, err := ownCgroups()
	require.NoError(t, err)
	parent := fmt.Sprintf("pmvm-kexec-v2-test-%d", os.Getpid())

	avail, _ := os.ReadFile(filepath.Join(mounts.v2.mountpoint, "cgroup.controllers"))
	c := &Cgroup{Name: "vm2", Mode: CgroupUnified, Dirs: map[string]string{}}
	err = c.createV2(mounts, own, parent, CgroupLimits{})
	t.Cleanup(func() { c.Delete() })
	require.NoError(t, err, "v2 cgroup under %s", mounts.v2.mountpoint)
	dir := c.Dir("")
	assert.DirExists(t, dir)
	assert.True(t, strings.HasSuffix(dir, "/"+parent+"/vm2.scope"), dir)
	p := startSleeper(t)
	require.NoError(t, c.AddProc(p.Process.Pid))
	procs, err := c.Procs()
	require.NoError(t, err)
	assert.Equal(t, []int{p.Process.Pid}, procs)
	p.Process.Kill()
	p.Wait()
	require.NoError(t, c.Delete())
	assert.NoDirExists(t, filepath.Dir(dir))

	if !hasWord(string(avail), "pids") {
		c2 := &Cgroup{Name: "vm3", Mode: CgroupUnified, Dirs: map[string]string{}}
		err = c2.createV2(mounts, own, parent, CgroupLimits{PidsMax: 100})
		c2.Delete()
		assert.ErrorContains(t, err, `controller "pids" is not available`)
	} else {
		t.Logf("the v2 hierarchy at %s has controllers (%s): the missing-controller refusal is not reachable here", mounts.v2.mountpoint, strings.TrimSpace(string(avail)))
	}
}

// TestCgroupParsing proves mountinfo and /proc/self/cgroup parsing for the
// three layouts (co-mounted v1 controllers, a v2 root, a container whose
// mount root is not "/"), relative parents, and the weight to shares map.
func TestCgroupParsing(t *testing.T) {
	mi := `25 20 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw
26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/pids rw shared:9 - cgroup cgroup rw,pids
`
	ms, err := parseCgroupMounts(strings.NewReader(mi))
	require.NoError(t, err)
	assert.Equal(t, "/sys/fs/cgroup/unified", ms.v2.mountpoint)
	assert.Equal(t, "/sys/fs/cgroup/cpu,cpuacct", ms.v1["cpu"].mountpoint)
	assert.Equal(t, ms.v1["cpu"], ms.v1["cpuacct"])
	assert.Equal(t, "/sys/fs/cgroup/pids", ms.v1["pids"].mountpoint)
	d, err := ms.v1["memory"].dir("/docker/abc/pmvm/vm1")
	require.NoError(t, err)
	assert.Equal(t, "/sys/fs/cgroup/memory/pmvm/vm1", d)
	_, err = ms.v1["memory"].dir("/pmvm/vm1")
	assert.ErrorContains(t, err, "outside the part of the hierarchy")

	own := parseOwnCgroups("12:pids:/user.slice\n4:cpu,cpuacct:/\n0::/system.slice/pmvm.service\n")
	assert.Equal(t, "/user.slice", own["pids"])
	assert.Equal(t, "/", own["cpuacct"])
	assert.Equal(t, "/system.slice/pmvm.service", own[""])
	assert.Equal(t, "/system.slice/pmvm.service/vms", resolveParent("vms", own[""]))
	assert.Equal(t, "/pmvm", resolveParent("/pmvm/", own[""]))

	assert.Equal(t, uint64(1024), CPUShares(100))
	assert.Equal(t, uint64(2), CPUShares(0))
	assert.Equal(t, uint64(102400), CPUShares(10000))
	assert.Equal(t, `a b`, unescapeOctal(`a\040b`))
}
