package kexec

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
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

// procCgroups is /proc/PID/cgroup, parsed by the library: the v1 path of
// each controller and the v2 path.
func procCgroups(t *testing.T, pid int) (map[string]string, string) {
	t.Helper()
	v1, v2, err := cgroups.ParseCgroupFileUnified(fmt.Sprintf("/proc/%d/cgroup", pid))
	require.NoError(t, err)
	return v1, v2
}

// TestCgroupLifecycleOnThisHost proves, for real and as root on this
// machine's hierarchy, that a VM cgroup is created with the limits
// written where the kernel reads them (v1/hybrid: cpu.shares from the
// weight, memory.limit_in_bytes = guest RAM + overhead, pids.max; v2:
// cpu.weight, memory.max, pids.max), that AddProc moves a process into it
// (its /proc/PID/cgroup says so), that a cgroup holding a process is not
// reused for a second VM of the same name (and its limits are left alone),
// and that Delete removes it and the parents it created, and can be called
// again. The cgroups are nested under this test's own cgroup (a relative
// cgroup_parent), so nothing outside it is touched. Cgroups that cannot be
// used here fail the test with the reason.
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
	limitFiles := map[string]string{}
	if mode == CgroupUnified {
		dir := cg.Dir("")
		limitFiles[filepath.Join(dir, "cpu.weight")] = "50"
		limitFiles[filepath.Join(dir, "memory.max")] = "335544320"
		limitFiles[filepath.Join(dir, "pids.max")] = "128"
	} else {
		for _, ctl := range []string{"cpu", "memory", "pids"} {
			require.Contains(t, cg.Dirs, ctl, "the v1 %s hierarchy is used", ctl)
		}
		limitFiles[filepath.Join(cg.Dir("cpu"), "cpu.shares")] = "512"
		limitFiles[filepath.Join(cg.Dir("memory"), "memory.limit_in_bytes")] = "335544320"
		limitFiles[filepath.Join(cg.Dir("pids"), "pids.max")] = "128"
	}
	for file, want := range limitFiles {
		assert.Equal(t, want, readTrim(t, file), file)
	}

	p := startSleeper(t)
	require.NoError(t, cg.AddProc(p.Process.Pid))
	procs, err := cg.Procs()
	require.NoError(t, err)
	assert.Equal(t, []int{p.Process.Pid}, procs)
	v1, v2 := procCgroups(t, p.Process.Pid)
	for ctl := range cg.Dirs {
		got := v2
		if ctl != "" {
			got = v1[ctl]
		}
		assert.True(t, strings.HasSuffix(got, "/"+parent+"/vm1") || strings.HasSuffix(got, "/"+parent+"/vm1.scope"),
			"/proc/%d/cgroup puts it in %s/vm1 for %q, not %q", p.Process.Pid, parent, ctl, got)
	}

	_, err = NewCgroup("vm1", parent, CgroupLimits{CPUWeight: 200, MemoryMax: 512 << 20, PidsMax: 256})
	assert.ErrorContains(t, err, "already holds processes", "a running VM's cgroup is not reused")
	for file, want := range limitFiles {
		assert.Equal(t, want, readTrim(t, file), "%s is left as it was", file)
	}
	procs, err = cg.Procs()
	require.NoError(t, err)
	assert.Equal(t, []int{p.Process.Pid}, procs, "the refused second cgroup left the first one's process in it")

	assert.Error(t, cg.Delete(), "a cgroup holding a process is not removed")
	for _, dir := range cg.Dirs {
		assert.DirExists(t, dir)
	}
	p.Process.Kill()
	p.Wait()
	require.NoError(t, cg.Delete())
	for _, dir := range cg.Dirs {
		assert.NoDirExists(t, dir)
		assert.NoDirExists(t, filepath.Dir(dir), "the parent NewCgroup created is removed too")
	}
	assert.NoError(t, cg.Delete(), "deleting again does nothing")
}

// TestCgroupV2LayoutOnUnifiedMount proves the cgroup v2 code path for real
// where this host has a v2 hierarchy: the hybrid layout's
// /sys/fs/cgroup/unified (which has no controllers, or few) or the unified
// root. Without limits a VM cgroup is created, a process is started
// directly inside it the way restore starts pmvm (CgroupFD on the
// directory the library created), it is listed, and the cgroup and its
// parent are deleted; with a limit whose controller the hierarchy lacks,
// creation is refused naming the controller and leaves nothing behind.
func TestCgroupV2LayoutOnUnifiedMount(t *testing.T) {
	mode := DetectCgroupMode()
	mp := v2Mountpoint(mode)
	require.NotEmpty(t, mp, "no cgroup v2 hierarchy mounted on this host (%s)", mode)
	parent := fmt.Sprintf("pmvm-kexec-v2-test-%d", os.Getpid())

	c, err := newCgroupV2("vm2", mp, parent, CgroupLimits{})
	require.NoError(t, err, "v2 cgroup under %s", mp)
	t.Cleanup(func() { c.Delete() })
	assert.Equal(t, CgroupUnified, c.Mode)
	dir := c.Dir("")
	assert.DirExists(t, dir)
	assert.True(t, strings.HasSuffix(dir, "/"+parent+"/vm2.scope"), dir)
	assert.Equal(t, dir, filepath.Join(mp, c.Path))
	assert.Equal(t, dir, c.String())

	cmd := exec.Command("/bin/sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, startInCgroup(cmd, c))
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	_, v2 := procCgroups(t, cmd.Process.Pid)
	assert.Equal(t, c.Path, v2, "/proc/%d/cgroup", cmd.Process.Pid)
	assert.True(t, cmd.SysProcAttr.UseCgroupFD, "started inside the cgroup with CLONE_INTO_CGROUP, not moved after")
	procs, err := c.Procs()
	require.NoError(t, err)
	assert.Equal(t, []int{cmd.Process.Pid}, procs)

	// AddProc on v2 too: a second process moved in after its start.
	p := startSleeper(t)
	require.NoError(t, c.AddProc(p.Process.Pid))
	procs, err = c.Procs()
	require.NoError(t, err)
	assert.ElementsMatch(t, []int{cmd.Process.Pid, p.Process.Pid}, procs)

	cmd.Process.Kill()
	cmd.Wait()
	p.Process.Kill()
	p.Wait()
	require.NoError(t, c.Delete())
	assert.NoDirExists(t, dir)
	assert.NoDirExists(t, filepath.Dir(dir))

	avail, err := os.ReadFile(filepath.Join(mp, "cgroup.controllers"))
	require.NoError(t, err)
	if !slices.Contains(strings.Fields(string(avail)), "pids") {
		_, err = newCgroupV2("vm3", mp, parent, CgroupLimits{PidsMax: 100})
		assert.ErrorContains(t, err, `controller "pids" is not available`)
		assert.NoDirExists(t, filepath.Join(mp, mustV2Group(t, "vm3", parent)))
		assert.NoDirExists(t, filepath.Dir(filepath.Join(mp, mustV2Group(t, "vm3", parent))))
	} else {
		t.Logf("the v2 hierarchy at %s has the pids controller (%s): the missing-controller refusal is not reachable here", mp, strings.TrimSpace(string(avail)))
	}
}

func mustV2Group(t *testing.T, name, parent string) string {
	t.Helper()
	g, err := v2Group(name, parent)
	require.NoError(t, err)
	return g
}

// TestCgroupParsing proves where a VM's cgroup goes for each kind of
// cgroup_parent, as the library resolves it from this process's own
// /proc/self/cgroup and mountinfo: absolute parents from the root of the
// hierarchy (the defaults /pmvm.slice on v2, /pmvm on v1), relative ones
// under this process's own cgroup (per controller on v1, which can
// differ); and the weight to shares map used on v1.
func TestCgroupParsing(t *testing.T) {
	v1, v2, err := cgroups.ParseCgroupFileUnified("/proc/self/cgroup")
	require.NoError(t, err)

	g, err := v2Group("web1", "")
	require.NoError(t, err)
	assert.Equal(t, "/pmvm.slice/web1.scope", g)
	g, err = v2Group("web1", "/vms/")
	require.NoError(t, err)
	assert.Equal(t, "/vms/web1.scope", g)
	if mode := DetectCgroupMode(); mode == CgroupUnified || mode == CgroupHybrid {
		g, err = v2Group("web1", "vms")
		require.NoError(t, err)
		assert.Equal(t, path.Join(v2, "vms/web1.scope"), g, "a relative parent is under this process's v2 cgroup %q", v2)
		require.NoError(t, cgroup2.VerifyGroupPath(g))
	}

	p, err := v1Path("web1", "")(cgroup1.Memory)
	require.NoError(t, err)
	assert.Equal(t, "/pmvm/web1", p)
	if mode := DetectCgroupMode(); mode == CgroupLegacy || mode == CgroupHybrid {
		subs, err := v1Subsystems()
		require.NoError(t, err)
		require.NotEmpty(t, subs)
		for _, s := range subs {
			assert.Contains(t, v1Controllers, s.Name())
			own := v1[string(s.Name())]
			require.NotEmpty(t, own, "this process is in a %s cgroup", s.Name())
			p, err := v1Path("web1", "vms")(s.Name())
			require.NoError(t, err)
			assert.Equal(t, path.Join(own, "vms/web1"), p, "a relative parent is under this process's %s cgroup", s.Name())
			dir, ok := subsystemDir(s, p)
			require.True(t, ok)
			assert.Equal(t, filepath.Join(cgroupRoot, string(s.Name()), own, "vms/web1"), dir)
		}
	}

	assert.Equal(t, uint64(1024), CPUShares(100))
	assert.Equal(t, uint64(512), CPUShares(50))
	assert.Equal(t, uint64(2), CPUShares(0))
	assert.Equal(t, uint64(102400), CPUShares(10000))
	assert.Equal(t, uint64(100), cgroup2.ConvertCPUSharesToCgroupV2Value(CPUShares(100)), "the library maps the shares back to the same default weight")
}
