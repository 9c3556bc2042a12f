package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// InitPrelude starts every lab /init (L1 and L2): busybox applets, PATH, the
// pseudo filesystems and a console on stdio (scripts/prelude.sh).
var InitPrelude = script("prelude.sh")

// GuestReport prints the PMVM-GUEST marker lines (see GuestInit;
// scripts/guest-report.sh).
var GuestReport = script("guest-report.sh")

// GuestInit is the default guest /init: report, then power off. Markers:
//
//	PMVM-GUEST uname=<uname -r>
//	PMVM-GUEST cpus-online=<cpu list, e.g. 0-1>
//	PMVM-GUEST memtotal-kb=<MemTotal in KiB>
//	PMVM-GUEST acpi-errors=<count>  (followed by "PMVM-GUEST acpi-error: <line>" each)
//	PMVM-GUEST done
var GuestInit = InitPrelude + GuestReport + script("guest-done.sh")

// GuestSpec describes a guest (L2) initrd.
type GuestSpec struct {
	Name    string             // image file name in <cache>/images (default "guest")
	Init    string             // /init script (default GuestInit; see guestinit.go for builders)
	Agent   bool               // add Debian's qemu-ga (/usr/sbin/qemu-ga) with its libraries
	Pattern bool               // add /bin/pattern (static, from qa/guestbin/pattern)
	Extra   func(*Image) error // adds more files (guest programs, data)
}

// GuestImage is a bootable guest: kernel + initrd.
type GuestImage struct {
	Kernel  *Kernel
	BzImage string // host path of the bzImage
	Initrd  string // host path of the cpio
}

// busyboxImage returns an image holding busybox, /bin/sh, device nodes and /init.
func (l *Lab) busyboxImage(init string) (*Image, error) {
	bb, err := l.BusyboxBinary()
	if err != nil {
		return nil, err
	}
	im := NewImage()
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "etc", "root"} {
		im.Dir(d, 0o755)
	}
	im.BasicDevices()
	im.HostFile("bin/busybox", bb, 0o755)
	im.Symlink("bin/sh", "busybox")
	im.File("init", []byte(init), 0o755)
	return im, nil
}

func (l *Lab) imagePath(name string) (string, error) {
	dir := filepath.Join(l.Cache, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return filepath.Join(dir, name+".cpio"), nil
}

// Guest builds a guest initrd with the given kernel (rebuilt every call; it
// takes well under a second). Only the kernel's bzImage is used.
func (l *Lab) Guest(k *Kernel, spec GuestSpec) (*GuestImage, error) {
	if spec.Name == "" {
		spec.Name = "guest"
	}
	if spec.Init == "" {
		spec.Init = GuestInit
	}
	im, err := l.busyboxImage(spec.Init)
	if err != nil {
		return nil, err
	}
	im.Dir("var/run", 0o755)
	if spec.Agent {
		if _, err := l.AddDynamic(im, GuestAgentPackage, "usr/sbin/qemu-ga"); err != nil {
			return nil, err
		}
	}
	if spec.Pattern {
		bin, err := l.BuildStatic("./qa/guestbin/pattern", "pattern")
		if err != nil {
			return nil, err
		}
		im.HostFile(strings.TrimPrefix(GuestPattern, "/"), bin, 0o755)
	}
	if spec.Extra != nil {
		if err := spec.Extra(im); err != nil {
			return nil, err
		}
	}
	out, err := l.imagePath(spec.Name)
	if err != nil {
		return nil, err
	}
	if err := l.locked(func() error { return im.WriteFile(out) }); err != nil {
		return nil, err
	}
	return &GuestImage{Kernel: k, BzImage: k.BzImage, Initrd: out}, nil
}

// In-image paths of the lab's own programs.
const (
	GuestPattern = "/bin/pattern" // in the guest
	LabDaxpeek   = "/bin/daxpeek" // in the lab host
	LabKillon    = "/bin/killon"  // in the lab host: kill -9 at a mapping (qa/guestbin/killon)
	LabKVMHold   = "/bin/kvmhold" // in the lab host: qa/guestbin/kvmhold
	LabLib       = "/lab/lib.sh"  // in the lab host: ScenarioLib
)

// hostInitLib is what every lab host /init does, after the prelude:
// fail, load_modules, wait_kvm and kvmhold_start (LabKVMHold: one idle VM
// for the lab host's life, so the tests' VMs never make the kernel patch
// its text; see qa/guestbin/kvmhold).
var hostInitLib = script("host-lib.sh")

// addKVMHold puts the static kvmhold into a lab host image.
func (l *Lab) addKVMHold(im *Image) error {
	bin, err := l.BuildStatic("./qa/guestbin/kvmhold", "kvmhold")
	if err != nil {
		return err
	}
	im.HostFile(strings.TrimPrefix(LabKVMHold, "/"), bin, 0o755)
	return nil
}

// DefaultHostModules are loaded in L1 (with their dependencies) to get /dev/kvm.
var DefaultHostModules = []string{"irqbypass", "ccp", "kvm", "kvm-amd"}

// DaxModules turn the memmap= reservation into /dev/pmem0 and let ndctl
// make it a device-dax namespace (README.md, "How the lab works"), in load order.
var DaxModules = []string{"libnvdimm", "nd_e820", "nd_btt", "nd_pmem", "dax_pmem", "device_dax"}

// HostSpec describes the lab host (L1) initrd.
type HostSpec struct {
	Name         string            // image file name in <cache>/images (default "host")
	Kernel       *Kernel           // L1 kernel: modules come from it
	Modules      []string          // default DefaultHostModules (dependencies added)
	ModuleParams map[string]string // insmod parameters by module name, e.g. "kvm_amd": "nested=1"
	Pmvm         string            // host path of the static pmvm binary, placed at /bin/pmvm ("" = none)
	Guest        *GuestImage       // placed at /lab/guest/vmlinuz and /lab/guest/initrd.cpio
	GuestConfig  *VMConfig         // written to /lab/guest.toml; its RunDir is created
	Scenario     string            // shell run by /init after "PMVM-LAB kvm-ready"; may ". /lab/lib.sh" (ScenarioLib)
	// Configs are more VM configs, written to /lab/<key>.toml (their
	// RunDirs are created too).
	Configs map[string]*VMConfig
	// Dax adds DaxModules, ndctl, daxctl and /bin/daxpeek; the scenario
	// calls dax_setup (ScenarioLib) to make /dev/dax0.0.
	Dax   bool
	Extra func(*Image) error
}

// HostImage is a bootable lab host: vmlinux + initrd.
type HostImage struct {
	Kernel  *Kernel
	Vmlinux string // the vmlinux ELF (PVH boot), or the bzImage if none can be extracted
	Initrd  string
	Modules []Module // in load order
}

// Host builds the lab host initrd. /init mounts the pseudo filesystems,
// insmods the modules in dependency order, checks /dev/kvm, prints
// "PMVM-LAB kvm-ready", runs /lab/scenario.sh, prints
// "PMVM-LAB scenario-exit=<status>" and powers off. Any failure prints a
// "PMVM-LAB ERROR: ..." line and powers off.
func (l *Lab) Host(spec HostSpec) (*HostImage, error) {
	if spec.Name == "" {
		spec.Name = "host"
	}
	if spec.Modules == nil {
		spec.Modules = DefaultHostModules
	}
	k := spec.Kernel
	vmlinux, err := k.Vmlinux()
	if errors.Is(err, ErrNotXZ) {
		l.Logf("lab: %v; L1 boots the bzImage", err)
		vmlinux = k.BzImage
	} else if err != nil {
		return nil, err
	}
	modNames := append([]string(nil), spec.Modules...)
	if spec.Dax {
		modNames = append(modNames, DaxModules...)
	}
	mods, err := k.ModuleLoadOrder(modNames...)
	if err != nil {
		return nil, err
	}
	runDirs := []string{}
	if spec.GuestConfig != nil {
		runDirs = append(runDirs, spec.GuestConfig.RunDir())
	}
	cfgNames := make([]string, 0, len(spec.Configs))
	for n := range spec.Configs {
		cfgNames = append(cfgNames, n)
	}
	sort.Strings(cfgNames)
	for _, n := range cfgNames {
		runDirs = append(runDirs, spec.Configs[n].RunDir())
	}
	im, err := l.busyboxImage(InitPrelude + hostInitLib +
		ShellVars(map[string]string{"RUN_DIRS": strings.Join(runDirs, " ")}) + script("host-init.sh"))
	if err != nil {
		return nil, err
	}
	var order strings.Builder
	for _, m := range mods {
		data, err := m.Data()
		if err != nil {
			return nil, err
		}
		im.File("lib/modules/"+m.File, data, 0o644)
		fmt.Fprintf(&order, "%s %s\n", m.File, spec.ModuleParams[m.Name])
	}
	im.File("lib/modules/load-order", []byte(order.String()), 0o644)
	im.File("lab/scenario.sh", []byte(spec.Scenario), 0o755)
	im.File(strings.TrimPrefix(LabLib, "/"), []byte(ScenarioLib), 0o644)
	for _, n := range cfgNames {
		im.File("lab/"+n+".toml", spec.Configs[n].TOML(), 0o644)
	}
	if spec.Dax {
		if err := l.addDaxTools(im); err != nil {
			return nil, err
		}
	}
	if err := l.addKVMHold(im); err != nil {
		return nil, err
	}
	if spec.Pmvm != "" {
		im.HostFile(strings.TrimPrefix(LabPmvm, "/"), spec.Pmvm, 0o755)
	}
	if spec.Guest != nil {
		im.HostFile(strings.TrimPrefix(LabGuestKernel, "/"), spec.Guest.BzImage, 0o644)
		im.HostFile(strings.TrimPrefix(LabGuestInitrd, "/"), spec.Guest.Initrd, 0o644)
	}
	if spec.GuestConfig != nil {
		im.File(strings.TrimPrefix(LabGuestConfig, "/"), spec.GuestConfig.TOML(), 0o644)
	}
	if spec.Extra != nil {
		if err := spec.Extra(im); err != nil {
			return nil, err
		}
	}
	out, err := l.imagePath(spec.Name)
	if err != nil {
		return nil, err
	}
	if err := l.locked(func() error { return im.WriteFile(out) }); err != nil {
		return nil, err
	}
	return &HostImage{Kernel: k, Vmlinux: vmlinux, Initrd: out, Modules: mods}, nil
}

// addDaxTools puts what a lab host needs for device-dax into im: ndctl
// and daxctl with their libraries, daxpeek and killon.
func (l *Lab) addDaxTools(im *Image) error {
	for _, d := range []struct{ pkg, bin string }{
		{NdctlPackage, "usr/bin/ndctl"},
		{DaxctlPackage, "usr/bin/daxctl"},
	} {
		if _, err := l.AddDynamic(im, d.pkg, d.bin); err != nil {
			return err
		}
	}
	peek, err := l.BuildStatic("./qa/guestbin/daxpeek", "daxpeek")
	if err != nil {
		return err
	}
	im.HostFile(strings.TrimPrefix(LabDaxpeek, "/"), peek, 0o755)
	killon, err := l.BuildStatic("./qa/guestbin/killon", "killon")
	if err != nil {
		return err
	}
	im.HostFile(strings.TrimPrefix(LabKillon, "/"), killon, 0o755)
	return nil
}

// BuildPmvm builds the static pmvm binary into <cache>/pmvm
// (CGO_ENABLED=0 go build -o <cache>/pmvm ./cmd/pmvm, from the repo root).
func (l *Lab) BuildPmvm() (string, error) {
	return l.BuildStatic("./cmd/pmvm", "pmvm")
}

// BuildStatic builds a Go package of this repo as a static binary <cache>/<name>.
func (l *Lab) BuildStatic(pkg, name string) (string, error) {
	out := filepath.Join(l.Cache, name)
	err := l.locked(func() error { return l.goBuild(pkg, out) })
	return out, err
}

func (l *Lab) goBuild(pkg, out string) error {
	tmp := out + ".tmp"
	cmd := exec.Command("go", "build", "-o", tmp, pkg)
	cmd.Dir = l.Repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	b, err := cmd.CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("lab: CGO_ENABLED=0 go build -o %s %s: %w\n%s", tmp, pkg, err, b)
	}
	return os.Rename(tmp, out)
}
