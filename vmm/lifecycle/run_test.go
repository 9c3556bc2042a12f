package lifecycle

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm"
)

// TestRunRefusesBootOverSavedGuest proves that Run refuses to boot a VM
// afresh while the host's state_dir holds its saved guest, before it
// creates anything (here: the console file, which the run would open
// first), naming the file and both ways out; a resume of that file is not
// refused for it.
func TestRunRefusesBootOverSavedGuest(t *testing.T) {
	dir := t.TempDir()
	host := &configs.Host{StateDir: filepath.Join(dir, "state")}
	require.NoError(t, os.MkdirAll(host.StateDir, 0o700))
	statePath := host.StatePath("vm1")
	require.NoError(t, os.WriteFile(statePath, []byte("not a state file"), 0o600))
	console := filepath.Join(dir, "console.log")
	cfg := &configs.VM{Name: "vm1", VCPUs: 1, Console: configs.Console{Output: configs.ConsoleFile, Path: console}}
	opts := RunOptions{Log: zerolog.Nop(), ConfigPath: "/etc/pmvm/vm1.toml", Host: HostConfig{Path: "/etc/pmvm/host.toml", From: "--host-config", Host: host}}

	outcome, err := Run(cfg, opts)
	require.Error(t, err)
	assert.Equal(t, vmm.OutcomeError, outcome)
	msg := err.Error()
	assert.Contains(t, msg, `VM "vm1" has a state file that does not read`)
	assert.Contains(t, msg, "booting it afresh would overwrite the memory that guest is suspended in")
	assert.Contains(t, msg, "pmvm run /etc/pmvm/vm1.toml --incoming "+statePath)
	assert.Contains(t, msg, "move the file out of "+host.StateDir)
	assert.NoFileExists(t, console, "refused before anything was created")

	// Without a host config there is no state_dir to look in.
	assert.NoError(t, refuseBootOverSaved(cfg, HostConfig{Path: "/nonexistent/host.toml"}, "vm1.toml"))
	// An empty state_dir refuses nothing.
	require.NoError(t, os.Remove(statePath))
	assert.NoError(t, refuseBootOverSaved(cfg, opts.Host, "vm1.toml"))
}

// TestJoinCgroupWithoutCgroups proves when pmvm run stays in the cgroup
// it was started in (no host config, cgroups = false: said in the log),
// and that a pids limit the VM cannot run under is refused before any
// cgroup is made, naming the host config.
func TestJoinCgroupWithoutCgroups(t *testing.T) {
	cfg := &configs.VM{Name: "vm1", VCPUs: 4}
	var out bytes.Buffer
	log := zerolog.New(&out)

	require.NoError(t, JoinCgroup(cfg, HostConfig{Path: "/etc/pmvm/host.toml", From: "the default"}, log))
	assert.Contains(t, out.String(), "no host config (the default): no cgroup of the VM's own")
	out.Reset()

	off := false
	require.NoError(t, JoinCgroup(cfg, HostConfig{Path: "/h.toml", Host: &configs.Host{Limits: configs.Limits{Cgroups: &off}}}, log))
	assert.Contains(t, out.String(), "cgroups = false in the host config")

	low := &configs.Host{Limits: configs.Limits{CgroupParent: "pmvm-lifecycle-test-never-made", VMLimits: configs.VMLimits{Pids: 2}}}
	err := JoinCgroup(cfg, HostConfig{Path: "/h.toml", Host: low}, log)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is too low for VM \"vm1\" with 4 vCPU(s)")
	assert.True(t, strings.HasSuffix(err.Error(), "(host config /h.toml)"), err.Error())
}

// TestBootRefusedOverAnotherVMsSavedMemory proves that the "no cold boot
// over a saved guest" check follows the memory, not the VM's name: VM b,
// whose config names the backing file that saved VM a is suspended in, is
// refused (naming a, its state file and the backing), while a VM on other
// memory, and b once a's state is spent, boot.
func TestBootRefusedOverAnotherVMsSavedMemory(t *testing.T) {
	dir := t.TempDir()
	host := &configs.Host{StateDir: filepath.Join(dir, "state")}
	require.NoError(t, os.MkdirAll(host.StateDir, 0o700))
	// tmpfs files declared preserved across a kexec: memory mode reboot takes.
	shm := func(name string) string {
		p := fmt.Sprintf("/dev/shm/pmvm-lifecycle-test-%d-%s", os.Getpid(), name)
		require.NoError(t, os.WriteFile(p, nil, 0o600), "/dev/shm must be a writable tmpfs")
		t.Cleanup(func() { os.Remove(p) })
		require.NoError(t, os.Truncate(p, 64<<20))
		return p
	}
	backing, other := shm("guest"), shm("other")
	vm := func(name, file string, size configs.Size) *configs.VM {
		return &configs.VM{Name: name, Mode: memspec.ModeReboot, VCPUs: 1, Memory: []configs.Memory{
			{Name: "ram0", Size: size, Backing: file, Shared: true, PreservedAcrossKexec: true},
		}}
	}
	a, b, c := vm("a", backing, 64<<20), vm("b", backing, 64<<20), vm("c", other, 64<<20)
	verdicts := func(cfg *configs.VM) *pmem.Report {
		rep, err := pmem.Verdicts(vmm.MemorySpecs(cfg)...)
		require.NoError(t, err)
		return &rep
	}
	// a is saved in state_dir, as a host update saves it.
	sf := &state.File{Header: state.Header{Created: time.Now(), PMVMVersion: "test", VMName: "a", Mode: memspec.ModeReboot}}
	require.NoError(t, sf.AddJSON("memory/ram0", 1, verdicts(a).Blocks[0].Identity))
	saved := host.StatePath("a")
	require.NoError(t, state.WriteFile(saved, sf))
	h := HostConfig{Path: "/etc/pmvm/host.toml", Host: host}

	err := refuseBootOverSavedMemory(b, h, "/etc/pmvm/b.toml", verdicts(b))
	require.Error(t, err, "b boots over the memory a is suspended in")
	msg := err.Error()
	assert.Contains(t, msg, `VM "b"`)
	assert.Contains(t, msg, `memory block "ram0" (`+backing+`)`)
	assert.Contains(t, msg, `VM "a"`)
	assert.Contains(t, msg, saved)
	assert.Contains(t, msg, "guest memory was not touched")

	assert.NoError(t, refuseBootOverSavedMemory(c, h, "c.toml", verdicts(c)), "other memory")
	assert.NoError(t, refuseBootOverSavedMemory(b, HostConfig{Path: "/none"}, "b.toml", verdicts(b)), "no host config, no state_dir")
	_, err = state.MoveAsideResumed(saved)
	require.NoError(t, err)
	assert.NoError(t, refuseBootOverSavedMemory(b, h, "b.toml", verdicts(b)), "a spent state file holds nothing")
}

// TestSameBacking proves which identities name one memory for the boot
// check: a device-dax namespace through any node (a mknod alias has
// another inode) by uuid or device number; a file by inode and filesystem;
// never anonymous memory.
func TestSameBacking(t *testing.T) {
	dax := pmem.Identity{Kind: pmem.KindDevDax, Path: "/dev/dax0.0", Dev: 5, Ino: 100, Rdev: 0xfc00000, Size: 1 << 30, DaxUUID: "u1"}
	alias := pmem.Identity{Kind: pmem.KindDevDax, Path: "/tmp/alias", Dev: 6, Ino: 7, Rdev: 0xfc00000, Size: 64 << 20, DaxUUID: "u1"}
	other := pmem.Identity{Kind: pmem.KindDevDax, Path: "/dev/dax1.0", Dev: 5, Ino: 101, Rdev: 0xfc00001, Size: 1 << 30, DaxUUID: "u2"}
	noUUID := func(id pmem.Identity) pmem.Identity { id.DaxUUID = ""; return id }
	file := pmem.Identity{Kind: pmem.KindTmpfs, Path: "/dev/shm/a", Dev: 1, Ino: 9, Size: 64 << 20}
	link := pmem.Identity{Kind: pmem.KindTmpfs, Path: "/dev/shm/hardlink", Dev: 1, Ino: 9, Size: 32 << 20}
	for _, c := range []struct {
		name string
		a, b pmem.Identity
		same bool
	}{
		{"dax alias node", dax, alias, true},
		{"dax alias without uuid", noUUID(dax), noUUID(alias), true},
		{"another namespace", dax, other, false},
		{"another namespace without uuid", noUUID(dax), noUUID(other), false},
		{"file by another name", file, link, true},
		{"another file", file, pmem.Identity{Kind: pmem.KindTmpfs, Path: "/dev/shm/a", Dev: 1, Ino: 10}, false},
		{"anonymous", pmem.Identity{Kind: pmem.KindAnonymous}, pmem.Identity{Kind: pmem.KindAnonymous}, false},
		{"kinds differ", file, dax, false},
	} {
		assert.Equal(t, c.same, sameBacking(c.a, c.b), c.name)
	}
}
