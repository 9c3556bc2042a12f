package kexec

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/cgroup"
)

// kexecOK is a host that can kexec (the stub for plan tests).
func kexecOK() Status { return Status{Supported: true, Lockdown: "none"} }

// TestPlanRefusesUnsaveableVMsBeforeSuspendingAnything proves the plan
// judges every running VM of vm_dir and refuses the whole update, naming
// each VM and why, when one cannot be preserved: anonymous RAM in mode
// reboot (volatile memory), a mode "none" VM, a config that does not load.
// Update then returns the refusal without sending any VM anything but
// "status": no save, no suspend, no state file, no timeline. A VM that is
// not running is left alone and listed.
func TestPlanRefusesUnsaveableVMsBeforeSuspendingAnything(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	good := startFakeVM(t, h, "good", kindPreserved, vmm.StateRunning)
	anon := startFakeVM(t, h, "anon", kindAnonReboot, vmm.StateRunning)
	none := startFakeVM(t, h, "plain", kindModeNone, vmm.StateRunning)
	writeVMConfig(t, h, "idle", kindPreserved) // no socket: not running
	require.NoError(t, os.WriteFile(filepath.Join(h.VMDir, "broken.toml"), []byte("name = \"broken\"\nvcpu = 1\n"), 0o644))

	plan := NewPlan(h, PlanOptions{Kernel: fakeBzImage(t, root), Cmdline: "console=ttyS0", KexecStatus: kexecOK})
	err := plan.Err()
	require.Error(t, err)
	var refused *RefusedError
	require.True(t, errors.As(err, &refused))
	msg := err.Error()
	assert.Contains(t, msg, "refused before anything was suspended")
	assert.Contains(t, msg, `VM "anon"`)
	assert.Contains(t, msg, `memory block "ram0" (anonymous)`)
	assert.Contains(t, msg, "volatile")
	assert.Contains(t, msg, `VM "plain"`)
	assert.Contains(t, msg, `its mode is "none"`)
	assert.Contains(t, msg, `VM "broken"`)
	assert.Contains(t, msg, "does not load")
	assert.NotContains(t, msg, `VM "good"`)
	assert.NotContains(t, msg, `VM "idle"`)
	require.Len(t, plan.Idle, 1)
	assert.Equal(t, "idle", plan.Idle[0].Name)
	assert.Len(t, plan.Carried(), 1)

	var out bytes.Buffer
	plan.Print(&out)
	assert.Contains(t, out.String(), "REFUSED")
	assert.Contains(t, out.String(), "not running, left alone: idle")

	var upd bytes.Buffer
	res, err := Update(context.Background(), plan, Options{Out: &upd, PMVM: []string{"/bin/false"},
		Load: func(string, string, string) error { t.Error("a refused update must not load a kernel"); return nil }})
	assert.Nil(t, res)
	require.True(t, errors.As(err, &refused))
	for _, f := range []*fakeVM{good, anon, none} {
		assert.Equal(t, []string{"status"}, f.commands(), "VM %s was only asked its status", f.name)
	}
	entries, _ := os.ReadDir(h.StateDir)
	assert.Empty(t, entries, "nothing written to state_dir")
}

// TestPlanHostChecks proves the host-level refusals of the plan, each
// before anything is touched: a file that is not a bzImage, a host
// without kexec, state_dir on tmpfs (emptied by a kexec), a hook program
// that does not exist, and a pmvm process running a VM whose config is not
// in vm_dir is recognised from its command line.
func TestPlanHostChecks(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	h.StateDir = filepath.Join("/dev/shm", filepath.Base(root)+"-state")
	h.Hooks.PreKexec = &configsHook{Command: []string{"/nonexistent/hook"}}
	notKernel := filepath.Join(root, "notes.txt")
	require.NoError(t, os.WriteFile(notKernel, bytes.Repeat([]byte("x"), 4096), 0o644))
	plan := NewPlan(h, PlanOptions{Kernel: notKernel, Cmdline: "", KexecStatus: func() Status {
		return Status{Problem: "/sys/kernel/kexec_loaded does not exist: this kernel was built without kexec support (CONFIG_KEXEC_CORE)"}
	}})
	msg := plan.Err().Error()
	assert.Contains(t, msg, "is not a bzImage")
	assert.Contains(t, msg, "this host cannot kexec")
	assert.Contains(t, msg, "is on tmpfs, which a kexec empties")
	assert.Contains(t, msg, "hooks.pre-kexec: stat /nonexistent/hook")

	assert.Equal(t, "/etc/pmvm/vms/a.toml", pmvmRunConfig([]string{"/usr/local/bin/pmvm", "run", "--log-level", "debug", "/etc/pmvm/vms/a.toml", "--incoming", "/x"}))
	assert.Equal(t, "b.toml", pmvmRunConfig([]string{"pmvm", "run", "--log-level=info", "b.toml"}))
	assert.Equal(t, "/etc/pmvm/vms/c.toml", pmvmRunConfig([]string{"pmvm", "run", "--host-config", "/etc/pmvm/host.toml", "/etc/pmvm/vms/c.toml"}), "a restored pmvm run's --host-config value is not its config")
	assert.Equal(t, "", pmvmRunConfig([]string{"pmvm", "status", "a"}))
	assert.Equal(t, "", pmvmRunConfig([]string{"/usr/bin/vim", "run", "a.toml"}))
}

// TestDryRunPrint proves the printed plan names, per VM, its config,
// runstate, memory, verdict and state file, and the kernel, command line
// and hooks.
func TestDryRunPrint(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	h.Hooks.PreSave = &configsHook{Command: []string{"/bin/true", "drain"}, Timeout: configsDuration(5)}
	startFakeVM(t, h, "web1", kindPreserved, vmm.StateSuspended)
	plan := NewPlan(h, PlanOptions{HostConfig: "/etc/pmvm/host.toml", Kernel: fakeBzImage(t, root), Cmdline: "root=/dev/vda ro", KexecStatus: kexecOK})
	require.NoError(t, plan.Err())
	var out bytes.Buffer
	plan.Print(&out)
	s := out.String()
	t.Log("\n" + s)
	for _, want := range []string{
		"host config:  /etc/pmvm/host.toml",
		"(boot protocol 2.15, 6.99.0-test (fake))",
		`cmdline:      "root=/dev/vda ro"`,
		"hooks:        pre-save:     /bin/true drain (timeout 5s)",
		"pre-kexec:    -",
		"VM    CONFIG",
		"web1  " + filepath.Join(h.VMDir, "web1.toml") + "  suspended  64MiB   ok: ram0 tmpfs survives-kexec  " + h.StatePath("web1"),
		"the update would save 1 VM(s)",
	} {
		assert.Contains(t, s, want)
	}
}

// TestPlanPidsUsesEffectiveLimit proves the plan judges each VM's pids by
// its effective limit: a host default too low for a VM refuses it, naming
// the host config's [limits] pids and the least it needs, while a VM whose
// own [limits] pids is enough is carried (and the plan notes its limits).
func TestPlanPidsUsesEffectiveLimit(t *testing.T) {
	root := t.TempDir()
	h := testHost(t, root)
	on := true
	h.Limits.Cgroups = &on
	h.Limits.Pids = 10
	startFakeVM(t, h, "low", kindPreserved, vmm.StateRunning)
	own := startFakeVM(t, h, "own", kindPreserved, vmm.StateRunning)
	f, err := os.OpenFile(own.config, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("[limits]\npids = 100\ncpu_weight = 50\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())

	plan := NewPlan(h, PlanOptions{Kernel: fakeBzImage(t, root), Cmdline: "console=ttyS0", KexecStatus: kexecOK})
	msg := plan.Err().Error()
	assert.Contains(t, msg, `VM "low"`)
	assert.Contains(t, msg, `the host config's [limits] pids = 10 is too low for VM "low" with 1 vCPU(s): pmvm needs at least 65`)
	assert.NotContains(t, msg, `VM "own"`)
	for _, v := range plan.VMs {
		if v.Name == "own" {
			assert.True(t, v.OK, v.Reason)
			assert.Equal(t, cgroup.Limits{CPUWeight: 50, PidsMax: 100}, v.Limits)
			assert.Contains(t, v.Notes, "cgroup limits with its own [limits]: cpu_weight 50, pids 100")
		}
	}
}
