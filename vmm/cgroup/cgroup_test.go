package cgroup

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
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
	"github.com/pmvm/pmvm/pmem/memspec"
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
	mode := DetectMode()
	require.NotEqual(t, Unavailable, mode, "no cgroup filesystem at /sys/fs/cgroup: this test needs one (root, cgroupfs mounted)")
	t.Logf("cgroup layout: %s", mode)
	cfg := &configs.VM{Name: "vm1", VCPUs: 2, Memory: []configs.Memory{{Name: "ram0", Size: configs.Size(64 * memspec.MiB)}}}
	lim := LimitsFor(cfg, configs.Limits{VMLimits: configs.VMLimits{CPUWeight: 50, VMMMemoryOverhead: configs.Size(256 * memspec.MiB), Pids: 128}})
	assert.Equal(t, Limits{CPUWeight: 50, MemoryMax: 320 << 20, PidsMax: 128}, lim)
	parent := fmt.Sprintf("pmvm-cgroup-test-%d", os.Getpid())

	cg, err := New("vm1", parent, lim)
	require.NoError(t, err, "creating a VM cgroup on this host (%s)", mode)
	t.Cleanup(func() { cg.Delete() })
	t.Logf("cgroup %s: %s", cg.Path, cg)
	limitFiles := map[string]string{}
	if mode == Unified {
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

	_, err = New("vm1", parent, Limits{CPUWeight: 200, MemoryMax: 512 << 20, PidsMax: 256})
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
		assert.NoDirExists(t, filepath.Dir(dir), "the parent New created is removed too")
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
	mode := DetectMode()
	mp := v2Mountpoint(mode)
	require.NotEmpty(t, mp, "no cgroup v2 hierarchy mounted on this host (%s)", mode)
	parent := fmt.Sprintf("pmvm-cgroup-v2-test-%d", os.Getpid())

	c, err := newV2("vm2", mp, parent, Limits{}, 0)
	require.NoError(t, err, "v2 cgroup under %s", mp)
	t.Cleanup(func() { c.Delete() })
	assert.Equal(t, Unified, c.Mode)
	dir := c.Dir("")
	assert.DirExists(t, dir)
	assert.True(t, strings.HasSuffix(dir, "/"+parent+"/vm2.scope"), dir)
	assert.Equal(t, dir, filepath.Join(mp, c.Path))
	assert.Equal(t, dir, c.String())

	cmd := exec.Command("/bin/sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, Start(cmd, c))
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
		_, err = newV2("vm3", mp, parent, Limits{PidsMax: 100}, 0)
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
	if mode := DetectMode(); mode == Unified || mode == Hybrid {
		g, err = v2Group("web1", "vms")
		require.NoError(t, err)
		assert.Equal(t, path.Join(v2, "vms/web1.scope"), g, "a relative parent is under this process's v2 cgroup %q", v2)
		require.NoError(t, cgroup2.VerifyGroupPath(g))
	}

	p, err := v1Path("web1", "")(cgroup1.Memory)
	require.NoError(t, err)
	assert.Equal(t, "/pmvm/web1", p)
	if mode := DetectMode(); mode == Legacy || mode == Hybrid {
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

// TestLimitsForVMOverridesHost proves how a VM's cgroup limits are made:
// each of the VM config's [limits] it sets wins, each it leaves out is the
// host config's default, memory is guest RAM plus the effective overhead,
// and nothing set anywhere is no limit.
func TestLimitsForVMOverridesHost(t *testing.T) {
	host := configs.Limits{VMLimits: configs.VMLimits{CPUWeight: 100, VMMMemoryOverhead: configs.Size(256 * memspec.MiB), Pids: 1024}}
	for _, tc := range []struct {
		proves string
		vm     configs.VMLimits
		host   configs.Limits
		want   Limits
	}{
		{"no VM limits: the host's", configs.VMLimits{}, host, Limits{CPUWeight: 100, MemoryMax: 320 << 20, PidsMax: 1024}},
		{"each VM limit wins, the rest from the host", configs.VMLimits{CPUWeight: 50, Pids: 512}, host, Limits{CPUWeight: 50, MemoryMax: 320 << 20, PidsMax: 512}},
		{"the VM's overhead wins", configs.VMLimits{VMMMemoryOverhead: configs.Size(64 * memspec.MiB)}, host, Limits{CPUWeight: 100, MemoryMax: 128 << 20, PidsMax: 1024}},
		{"VM limits without host defaults", configs.VMLimits{CPUWeight: 10000, VMMMemoryOverhead: configs.Size(32 * memspec.MiB), Pids: 66}, configs.Limits{}, Limits{CPUWeight: 10000, MemoryMax: 96 << 20, PidsMax: 66}},
		{"nothing set: no limits", configs.VMLimits{}, configs.Limits{}, Limits{}},
	} {
		cfg := &configs.VM{Name: "vm", VCPUs: 2, Memory: []configs.Memory{{Name: "ram0", Size: configs.Size(64 * memspec.MiB)}}, Limits: tc.vm}
		assert.Equal(t, tc.want, LimitsFor(cfg, tc.host), tc.proves)
	}
	assert.Equal(t, "cpu_weight 50, memory 320MiB, pids 512", Limits{CPUWeight: 50, MemoryMax: 320 << 20, PidsMax: 512}.String())
	assert.Equal(t, "no limits", Limits{}.String())
}

// TestCheckPids proves a pids limit a VM could not run under (fewer than
// one thread per vCPU plus pmvm's own) is refused naming the config it
// comes from and the least it needs, and that the VM's own value is the
// one judged when it sets one.
func TestCheckPids(t *testing.T) {
	cfg := &configs.VM{Name: "web1", VCPUs: 4}
	low := configs.Limits{VMLimits: configs.VMLimits{Pids: 10}}
	err := CheckPids(cfg, low)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `the host config's [limits] pids = 10 is too low for VM "web1" with 4 vCPU(s): pmvm needs at least 68`)
	cfg.Limits.Pids = 68
	assert.NoError(t, CheckPids(cfg, low), "the VM's own pids wins over the host's")
	cfg.Limits.Pids = 67
	assert.ErrorContains(t, CheckPids(cfg, configs.Limits{}), "the VM config's [limits] pids = 67")
	cfg.Limits.Pids = 0
	assert.NoError(t, CheckPids(cfg, configs.Limits{}), "no pids limit at all")
}

// joinHelperEnv makes this test binary join a VM cgroup (see
// TestJoinCgroupHelper).
const joinHelperEnv = "PMVM_CGROUP_TEST_JOIN"

// joinHelperLimits are what a join helper writes into its cgroup.
var joinHelperLimits = Limits{CPUWeight: 30, MemoryMax: 256 << 20, PidsMax: 200}

// TestJoinCgroupHelper is not a test: with joinHelperEnv set to "NAME
// PARENT" it waits for a line on stdin, calls Join as pmvm run
// does, prints "moved=<bool>" or "error: ...", and lives until stdin
// closes. In a normal test run it returns at once.
func TestJoinCgroupHelper(t *testing.T) {
	spec := os.Getenv(joinHelperEnv)
	if spec == "" {
		return
	}
	name, parent, _ := strings.Cut(spec, " ")
	in := bufio.NewReader(os.Stdin)
	in.ReadString('\n')
	_, moved, err := Join(name, parent, joinHelperLimits)
	if err != nil {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("moved=%v\n", moved)
	io.Copy(io.Discard, in)
	os.Exit(0)
}

// joinChild is a process running TestJoinCgroupHelper.
type joinChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startJoinChild starts a join helper for VM name, inside cg if not nil
// (as pmvm host restore starts pmvm run), else in this test's cgroup.
func startJoinChild(t *testing.T, name, parent string, cg *Group) *joinChild {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^TestJoinCgroupHelper$")
	cmd.Env = append(os.Environ(), joinHelperEnv+"="+name+" "+parent)
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	cmd.Stderr = os.Stderr
	c := &joinChild{cmd: cmd}
	c.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	c.out = bufio.NewReader(stdout)
	require.NoError(t, Start(cmd, cg))
	t.Cleanup(c.stop)
	return c
}

// join lets the helper call Join and returns what it printed.
func (c *joinChild) join(t *testing.T) string {
	t.Helper()
	_, err := io.WriteString(c.stdin, "\n")
	require.NoError(t, err)
	line, err := c.out.ReadString('\n')
	require.NoError(t, err, "the join helper printed %q", line)
	return strings.TrimSpace(line)
}

func (c *joinChild) stop() {
	c.stdin.Close()
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// removeTestCgroups removes every directory named parent under the
// cgroup hierarchies, with every cgroup below it (their processes gone).
func removeTestCgroups(t *testing.T, parent string) {
	var rm func(dir string)
	rm = func(dir string) {
		subs, _ := os.ReadDir(dir)
		for _, s := range subs {
			if s.IsDir() {
				rm(filepath.Join(dir, s.Name()))
			}
		}
		if err := os.Remove(dir); err != nil {
			t.Logf("cgroup cleanup: %v", err)
		}
	}
	filepath.WalkDir(cgroupRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || d.Name() != parent {
			return nil
		}
		rm(p)
		return filepath.SkipDir
	})
}

// assertInVMCgroup checks, from /proc/PID/cgroup, that pid runs in VM
// name's cgroup under the relative parent in every hierarchy the VM's
// cgroup uses (exactly there, not in one nested below it), and that the
// limits files hold lim.
func assertInVMCgroup(t *testing.T, pid int, name, parent string, lim Limits) {
	t.Helper()
	v1, v2 := procCgroups(t, pid)
	files := map[string]string{}
	if DetectMode() == Unified {
		assert.True(t, strings.HasSuffix(v2, "/"+parent+"/"+name+".scope") && !strings.Contains(strings.TrimSuffix(v2, "/"+parent+"/"+name+".scope"), "/"+parent+"/"),
			"pid %d in %q", pid, v2)
		dir := filepath.Join(cgroupRoot, v2)
		files[filepath.Join(dir, "cpu.weight")] = fmt.Sprint(lim.CPUWeight)
		files[filepath.Join(dir, "memory.max")] = fmt.Sprint(lim.MemoryMax)
		files[filepath.Join(dir, "pids.max")] = fmt.Sprint(lim.PidsMax)
	} else {
		for _, ctl := range []string{"cpu", "memory", "pids"} {
			p := v1[ctl]
			assert.True(t, strings.HasSuffix(p, "/"+parent+"/"+name) && !strings.Contains(strings.TrimSuffix(p, "/"+parent+"/"+name), "/"+parent+"/"),
				"pid %d in %s cgroup %q", pid, ctl, p)
		}
		files[filepath.Join(cgroupRoot, "cpu", v1["cpu"], "cpu.shares")] = fmt.Sprint(CPUShares(lim.CPUWeight))
		files[filepath.Join(cgroupRoot, "memory", v1["memory"], "memory.limit_in_bytes")] = fmt.Sprint(lim.MemoryMax)
		files[filepath.Join(cgroupRoot, "pids", v1["pids"], "pids.max")] = fmt.Sprint(lim.PidsMax)
	}
	for file, want := range files {
		assert.Equal(t, want, readTrim(t, file), file)
	}
}

// TestJoinCgroupOnThisHost proves, for real on this machine's hierarchy,
// what pmvm run does with its own process: a pmvm started outside moves
// itself (every thread) into its VM's cgroup with the limits written; a
// second pmvm of the same VM is refused, naming the process that holds the
// cgroup, and moves nowhere; a pmvm that pmvm host restore started inside
// the cgroup (created under the restoring process's cgroup, with a
// relative cgroup_parent) stays exactly there, is not moved into a cgroup
// nested below its own, and writes its limits into it.
func TestJoinCgroupOnThisHost(t *testing.T) {
	mode := DetectMode()
	require.NotEqual(t, Unavailable, mode, "no cgroup filesystem at /sys/fs/cgroup: this test needs one (root, cgroupfs mounted)")
	parent := fmt.Sprintf("pmvm-cgroup-join-test-%d", os.Getpid())
	t.Cleanup(func() { removeTestCgroups(t, parent) })

	first := startJoinChild(t, "vmj", parent, nil)
	assert.Equal(t, "moved=true", first.join(t))
	assertInVMCgroup(t, first.cmd.Process.Pid, "vmj", parent, joinHelperLimits)

	second := startJoinChild(t, "vmj", parent, nil)
	out := second.join(t)
	assert.Contains(t, out, "already holds processes")
	assert.Contains(t, out, fmt.Sprintf("[%d]", first.cmd.Process.Pid), "the message names the process in the way")
	assert.Contains(t, out, `is VM "vmj" running already? Stop it first`)
	v1, v2 := procCgroups(t, second.cmd.Process.Pid)
	assert.NotContains(t, v1["pids"]+v2, parent, "the refused one moved nowhere")
	assertInVMCgroup(t, first.cmd.Process.Pid, "vmj", parent, joinHelperLimits)

	cg, err := New("vmr", parent, Limits{})
	require.NoError(t, err)
	restored := startJoinChild(t, "vmr", parent, cg)
	assert.Equal(t, "moved=false", restored.join(t), "started in its cgroup, it stays there")
	assertInVMCgroup(t, restored.cmd.Process.Pid, "vmr", parent, joinHelperLimits)
	procs, err := cg.Procs()
	require.NoError(t, err)
	assert.Equal(t, []int{restored.cmd.Process.Pid}, procs)
	for _, dir := range cg.Dirs {
		assert.NoDirExists(t, filepath.Join(dir, parent), "no cgroup nested in the VM's own")
	}
}
