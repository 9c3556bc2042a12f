package lab

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// The host kernel update lab (TestLabKernelUpdate, `make demo`): the lab
// host boots Debian's 6.1 kernel, runs two VMs on device-dax under pmvm,
// and `pmvm host update` saves them and kexecs the lab host into Debian's
// 6.12 kernel; there `pmvm host restore` resumes them.
//
// Memory of the lab host (q35, -m 3072: RAM above 4 GiB spans 4G..5G):
//
//	memmap=256M!4G     region0 -> namespace0.0 -> devdax /dev/dax0.0  (VM vm1)
//	memmap=256M!4352M  region1 -> namespace1.0 -> devdax /dev/dax1.0  (VM vm2)
//	memmap=64M!4608M   region2 -> namespace2.0 raw -> /dev/pmem2, ext2:
//	                   /var/lib/pmvm (state_dir, the update's output)
//
// Emulated pmem keeps its content across a kexec (README.md, "How the lab works"), so the state
// files written before the kexec are on /dev/pmem2 after it, and the two
// devdax namespaces come back by themselves with the guests' memory.
//
// One image serves both kernels. /init reads the phase from the kernel
// command line (pmvm.phase=restore after the kexec), loads the modules of
// the running kernel (/lib/modules/<uname -r>/load-order: both kernels'
// modules are in the image, the 6.12 ones decompressed from .ko.xz) and
// runs /lab/scenario.sh PHASE. The kexec loads /lab/next/vmlinuz (the 6.12
// bzImage) with /lab/host.cpio: the image itself. QEMU gets that image
// followed by a second cpio archive holding it as /lab/host.cpio (the
// kernel unpacks concatenated archives), so the image needs no copy of
// itself inside.

// UpdateMemmap reserves the lab host's emulated persistent memory (see above).
const UpdateMemmap = "memmap=256M!4G memmap=256M!4352M memmap=64M!4608M"

// UpdateAppend is the lab host's first command line; UpdateNewCmdline the
// one `pmvm host update` gives the new kernel: the same memmap= (or the
// pmem would be RAM) and the phase.
const (
	UpdateAppend     = "console=ttyS0 panic=-1 quiet " + UpdateMemmap
	UpdateNewCmdline = UpdateAppend + " pmvm.phase=restore"
)

// In-lab paths of the update lab.
const (
	LabNextKernel  = "/lab/next/vmlinuz" // the kernel pmvm host update kexecs
	LabSelfInitrd  = "/lab/host.cpio"    // the lab host image, as the new kernel's initrd
	LabHostConfig  = "/etc/pmvm/host.toml"
	LabVMDir       = "/etc/pmvm/vms"
	LabStateMount  = "/var/lib/pmvm" // ext2 on /dev/pmem2: survives the kexec
	LabStateDir    = LabStateMount + "/state"
	LabUpdateOut   = LabStateMount + "/update.out" // pmvm host update's output, read back after the kexec
	LabLogDir      = "/var/log/pmvm"
	LabIdleInit    = "/idle" // in the guest: the unsaveable VM's init
	UpdateStateDev = "/dev/pmem2"
)

// UpdateVMs are the VMs the update carries, each on its own device-dax.
var UpdateVMs = []struct{ Name, Dax string }{{"vm1", "dax0.0"}, {"vm2", "dax1.0"}}

// VolatileVM is the VM that cannot be carried: anonymous RAM, mode "none".
const VolatileVM = "volatile"

// UpdateSpec shapes the update lab.
type UpdateSpec struct {
	Seed    uint64 // pattern seed of the guests
	Percent int    // share of guest RAM the pattern fills (default 50)
	VCPUs   int    // vCPUs of each carried VM (default 1: see UpdateScenario on the lab's limits)
	Pmvm    string // static pmvm to use ("" builds ./cmd/pmvm)
	Name    string // image name in <cache>/images (default "host-update")
	// FromPkg and ToPkg are the kernel packages before and after the
	// update (default Kernel61 and Kernel612).
	FromPkg, ToPkg string
}

// UpdateBuilt is the built update lab.
type UpdateBuilt struct {
	From, To *Kernel
	Guest    *GuestImage
	// Host boots the From kernel's vmlinux with Host.Initrd: the image
	// followed by the archive holding it as /lab/host.cpio.
	Host *HostImage
	// Image is the image alone (what the kexec loads as the initrd).
	Image string
	Spec  UpdateSpec
}

// updateHostModules are loaded in the lab host on both kernels: KVM,
// device-dax and ext4 (it mounts the ext2 state filesystem). ext4 asks
// the crypto API for "crc32c" at every mount, which without modprobe
// only works if crc32c_generic is loaded already.
func updateHostModules() []string {
	return append(append(append([]string(nil), DefaultHostModules...), DaxModules...), "crc32c_generic", "ext4")
}

// UpdateVMConfig is the config of carried VM name on /dev/<dax>: mode
// "reboot", its RAM the whole device (the size is filled in in the lab).
func UpdateVMConfig(name, dax string, vcpus int) VMConfig {
	c := DefaultGuestConfig()
	c.Name, c.Mode, c.VCPUs = name, "reboot", vcpus
	c.Agent = "/run/pmvm/" + name + "/agent.sock"
	c.Control = "/run/pmvm/" + name + "/control.sock"
	c.Memory = []MemoryBlock{{Name: "ram0", Size: daxSizeVar(dax), Backing: "/dev/" + dax, Shared: true}}
	return c
}

// daxSizeVar is the placeholder the lab replaces with /dev/<dax>'s size.
func daxSizeVar(dax string) string {
	return "@SIZE_" + strings.ReplaceAll(dax, ".", "_") + "@"
}

// VolatileVMConfig is the VM no update can carry: mode "none", anonymous
// RAM, one vCPU; its guest runs LabIdleInit.
func VolatileVMConfig() VMConfig {
	c := DefaultGuestConfig()
	c.Name, c.VCPUs = VolatileVM, 1
	c.Cmdline += " rdinit=" + LabIdleInit
	c.Agent = "/run/pmvm/" + VolatileVM + "/agent.sock"
	c.Control = "/run/pmvm/" + VolatileVM + "/control.sock"
	c.Memory = []MemoryBlock{{Name: "ram0", Size: "128MiB", Backing: "anonymous", Shared: true}}
	return c
}

// UpdateHostTOML is the lab host's /etc/pmvm/host.toml: state_dir on the
// ext2 of /dev/pmem2, hooks that leave a trace, cgroups with limits.
const UpdateHostTOML = `# the update lab's host config (qa/lab/update.go)
vm_dir = "` + LabVMDir + `"
state_dir = "` + LabStateDir + `"
runtime_dir = "/run/pmvm"
log_dir = "` + LabLogDir + `"
save_timeout = "2m"
restore_timeout = "2m"

[hooks.pre-kexec]
command = ["/bin/sh", "-c", "echo \"pre-kexec vms=$PMVM_VM kernel=$PMVM_KERNEL\" >> ` + LabStateMount + `/hooks.log"]
timeout = "10s"

[hooks.post-restore]
command = ["/bin/sh", "-c", "echo \"post-restore vm=$PMVM_VM state=$PMVM_STATE\" >> ` + LabStateMount + `/hooks.log"]
timeout = "10s"

[limits]
cgroups = true
cpu_weight = 100
vmm_memory_overhead = "256MiB"
pids = 256
`

// IdleGuestInit is LabIdleInit: report once, then idle
// (scripts/idle-guest.sh).
var IdleGuestInit = script("idle-guest.sh")

// BuildUpdate builds the update lab: the guest image (PMGuestInit with
// qemu-ga and the pattern daemon, plus LabIdleInit), the lab host image
// with both kernels' modules, the new kernel, pmvm, ndctl, the configs and
// UpdateScenario.
func (l *Lab) BuildUpdate(s UpdateSpec) (*UpdateBuilt, error) {
	if s.Percent == 0 {
		s.Percent = 50
	}
	if s.VCPUs == 0 {
		s.VCPUs = 1
	}
	if s.Name == "" {
		s.Name = "host-update"
	}
	if s.FromPkg == "" {
		s.FromPkg = Kernel61
	}
	if s.ToPkg == "" {
		s.ToPkg = Kernel612
	}
	from, err := l.Kernel(s.FromPkg)
	if err != nil {
		return nil, err
	}
	to, err := l.Kernel(s.ToPkg)
	if err != nil {
		return nil, err
	}
	if from.Version == to.Version {
		return nil, fmt.Errorf("lab: the update lab needs two different kernels; %s and %s are both %s", s.FromPkg, s.ToPkg, from.Version)
	}
	g, err := l.Guest(from, GuestSpec{
		Name: "guest-update", Agent: true, Pattern: true,
		Init: PMGuestInit(PMGuest{Seed: s.Seed, Percent: s.Percent}),
		Extra: func(im *Image) error {
			im.File(strings.TrimPrefix(LabIdleInit, "/"), []byte(IdleGuestInit), 0o755)
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	pmvm := s.Pmvm
	if pmvm == "" {
		if pmvm, err = l.BuildPmvm(); err != nil {
			return nil, fmt.Errorf("%w\n(the lab needs a static pmvm from ./cmd/pmvm)", err)
		}
	}
	vmlinux, err := from.Vmlinux()
	if err != nil {
		return nil, err
	}

	im, err := l.busyboxImage(updateInit())
	if err != nil {
		return nil, err
	}
	var mods []Module
	for _, k := range []*Kernel{from, to} {
		ms, err := k.ModuleLoadOrder(updateHostModules()...)
		if err != nil {
			return nil, err
		}
		var order strings.Builder
		for _, m := range ms {
			data, err := m.Data()
			if err != nil {
				return nil, err
			}
			im.File("lib/modules/"+k.Version+"/"+m.File, data, 0o644)
			order.WriteString(m.File + "\n")
		}
		im.File("lib/modules/"+k.Version+"/load-order", []byte(order.String()), 0o644)
		if k == from {
			mods = ms
		}
	}
	im.HostFile(strings.TrimPrefix(LabNextKernel, "/"), to.BzImage, 0o644)
	im.HostFile(strings.TrimPrefix(LabPmvm, "/"), pmvm, 0o755)
	if err := l.addKVMHold(im); err != nil {
		return nil, err
	}
	im.HostFile(strings.TrimPrefix(LabGuestKernel, "/"), g.BzImage, 0o644)
	im.HostFile(strings.TrimPrefix(LabGuestInitrd, "/"), g.Initrd, 0o644)
	if err := l.addDaxTools(im); err != nil {
		return nil, err
	}
	im.File(strings.TrimPrefix(LabHostConfig, "/"), []byte(UpdateHostTOML), 0o644)
	for _, v := range UpdateVMs {
		c := UpdateVMConfig(v.Name, v.Dax, s.VCPUs)
		im.File(strings.TrimPrefix(LabVMDir, "/")+"/"+v.Name+".toml", c.TOML(), 0o644)
	}
	vc := VolatileVMConfig()
	im.File(strings.TrimPrefix(LabVMDir, "/")+"/"+VolatileVM+".toml", vc.TOML(), 0o644)
	im.File(strings.TrimPrefix(LabLib, "/"), []byte(ScenarioLib), 0o644)
	im.File("lab/scenario.sh", []byte(UpdateScenario(to.Version)), 0o755)

	image, err := l.imagePath(s.Name + "-image")
	if err != nil {
		return nil, err
	}
	outer, err := l.imagePath(s.Name)
	if err != nil {
		return nil, err
	}
	err = l.locked(func() error {
		if err := im.WriteFile(image); err != nil {
			return err
		}
		return writeSelfContaining(outer, image)
	})
	if err != nil {
		return nil, err
	}
	return &UpdateBuilt{
		From: from, To: to, Guest: g, Image: image, Spec: s,
		Host: &HostImage{Kernel: from, Vmlinux: vmlinux, Initrd: outer, Modules: mods},
	}, nil
}

// writeSelfContaining writes outer = image followed by a cpio archive
// holding image as LabSelfInitrd.
func writeSelfContaining(outer, image string) error {
	f, err := os.CreateTemp(dirOf(outer), ".update-outer-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	in, err := os.Open(image)
	if err != nil {
		f.Close()
		return err
	}
	n, err := io.Copy(f, in)
	in.Close()
	if err == nil && n%4 != 0 { // the next archive starts 4-byte aligned
		_, err = f.Write(make([]byte, 4-n%4))
	}
	if err == nil {
		self := NewImage().HostFile(strings.TrimPrefix(LabSelfInitrd, "/"), image, 0o644)
		_, err = self.WriteTo(f)
	}
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", outer, err)
	}
	return os.Rename(f.Name(), outer)
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "."
}

// updateInit is the update lab's /init, the same on both kernels
// (scripts/update-init.sh).
// Markers:
//
//	PMVM-LAB init <uname -r> phase=<boot|restore>
//	PMVM-LAB kvm-ready
//	(the scenario)
//	PMVM-LAB scenario-exit=<status>
func updateInit() string {
	names := []string{VolatileVM}
	for _, v := range UpdateVMs {
		names = append(names, v.Name)
	}
	sort.Strings(names)
	return InitPrelude + hostInitLib + ShellVars(map[string]string{
		"STATE_MNT": LabStateMount,
		"LOG_DIR":   LabLogDir,
		"VM_NAMES":  strings.Join(names, " "),
	}) + script("update-init.sh")
}

// UpdateScenario is the update lab's /lab/scenario.sh PHASE,
// scripts/update-scenario.sh with its parameters (toVersion is
// the uname -r the update must reach).
//
// A limit of the lab, not of pmvm: two L2 guests at once under nested SVM
// emulated by QEMU 7.2 TCG (multi-threaded) are flaky. In about one run in
// four, measured on the 2-core build machine (with another lab running
// beside it), one of: the lab host's own kernel dies inside kvm-amd
// (__svm_vcpu_run returns with a bad GS base: "stack guard page was hit",
// "corrupted stack end detected inside scheduler"), an L2 guest triple
// faults (while booting, filling memory, or a second after its resume) or
// stalls (RCU "timer wakeup didn't happen"). A lab host kernel crash
// cannot be pmvm's doing; the guests' faults look the same. One guest at
// a time (TestLabRebootResume) does not show it. To keep the odds down the
// guests boot and fill their memory one after the other and have one vCPU
// each (UpdateSpec.VCPUs); the save and the resume still run both at once,
// as pmvm host update and restore do. Lines, in order:
//
// phase boot (the old kernel):
//
//	PMVM-LAB l1 phase=boot uname=<uname -r> date=<epoch s.us> uptime=<s>
//	PMVM-LAB ndctl-<n>: ...  PMVM-LAB ndctl-<n>-exit=0 secs=<s>     (n = 0, 1)
//	PMVM-LAB dax name=dax<n>.0 size=<bytes> uuid=<uuid>              (n = 0, 1)
//	PMVM-LAB mkfs: ... PMVM-LAB mkfs-exit=0 ...
//	PMVM-LAB state-fs dev=/dev/pmem2 type=<fs> size-kb=<n>
//	PMVM-LAB cgroup2 controllers=<list>
//	PMVM-LAB vm-started name=<vm> pid=<pid>                          (vm1, vm2)
//	PMVM-LAB vm-ready vm=<vm> l1-date=<s> boot_id=<uuid> ready date=<guest s>   (any order)
//	PMVM-LAB cgroup-before vm=<vm> pid=<pid> cgroup=<cgroup v2 path>  (vm1, vm2)
//	PMVM-LAB vm-started name=volatile pid=<pid>
//	PMVM-LAB vm-ready vm=volatile l1-date=<s> idle uname=<...>
//	PMVM-LAB refuse: <pmvm host update output> ... PMVM-LAB refuse-exit=<code> secs=<s>
//	PMVM-LAB refuse-status-<vm>: <pmvm status> ... PMVM-LAB refuse-status-<vm>-exit=0  (vm1, vm2)
//	PMVM-LAB after-refusal state-files=<n> kexec-loaded=<0|1>
//	PMVM-LAB pmvm-exit=<code>; PMVM-LAB stopped vm=volatile exit=<code>
//	PMVM-LAB update-start l1-date=<epoch s.us>
//	(the update's output, live, as "[update] <line>"; then the kexec)
//
// phase restore (the new kernel):
//
//	PMVM-LAB l1 phase=restore uname=<uname -r> date=<epoch s.us> uptime=<s>
//	PMVM-LAB dax name=dax<n>.0 size=<bytes> uuid=<uuid>
//	PMVM-LAB state-fs ...; PMVM-LAB cgroup2 ...
//	PMVM-LAB state-files-at-boot <names>
//	PMVM-LAB restore: <pmvm host restore output> ... PMVM-LAB restore-exit=<code> secs=<s>
//	PMVM-LAB update: <every line pmvm host update printed before the kexec>
//	PMVM-LAB update-output-end lines=<n>
//	PMVM-LAB resumed vm=<vm> l1-date=<s> resumed n=1 ... date=<guest s>   (any order)
//	PMVM-LAB verified vm=<vm> pattern-verify ok ... round=1 ...        (any order)
//	PMVM-LAB proc pid=<pid> config=<file> cgroup=<cgroup v2 path>      (each pmvm)
//	PMVM-LAB after-status-<vm>: <pmvm status> ... PMVM-LAB after-status-<vm>-exit=0
//	PMVM-LAB state-dir <names>
//	PMVM-LAB hooks: <line of the hooks' log> ...
func UpdateScenario(toVersion string) string {
	vms := make([]string, len(UpdateVMs))
	daxes := make([]string, len(UpdateVMs))
	for i, v := range UpdateVMs {
		vms[i], daxes[i] = v.Name, v.Dax
	}
	return ShellVars(map[string]string{
		"VMS":         strings.Join(vms, " "),
		"DAXES":       strings.Join(daxes, " "),
		"VM_DIR":      LabVMDir,
		"STATE_MNT":   LabStateMount,
		"STATE_DIR":   LabStateDir,
		"STATE_DEV":   UpdateStateDev,
		"UPDATE_OUT":  LabUpdateOut,
		"LOG_DIR":     LabLogDir,
		"NEW_KERNEL":  LabNextKernel,
		"SELF_INITRD": LabSelfInitrd,
		"NEW_CMDLINE": UpdateNewCmdline,
		"TO_VERSION":  toVersion,
		"VOLATILE_VM": VolatileVM,
		"HOST_CONFIG": LabHostConfig,
	}) + script("update-scenario.sh")
}

// UpdateHost is the QEMU run of the update lab host: LabHost with the
// three memmap= regions.
func UpdateHost(b *UpdateBuilt) QEMU {
	q := LabHost(b.Host)
	q.Name = "l1-update"
	q.Append = UpdateAppend
	return q
}
