package labrun

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// Need is a host facility a package's tests use. Every lab host has all
// of them (see labHost).
type Need string

const (
	// KVM: a /dev/kvm that speaks API 12 and creates a VM.
	KVM Need = "kvm"
	// HugePages2M and HugePages1G: the kernel offers huge pages of that
	// size (hugetlbfs can mount with pagesize=2M / 1G).
	HugePages2M Need = "hugepages-2M"
	HugePages1G Need = "hugepages-1G"
	// CgroupV2: a cgroup v2 hierarchy at /sys/fs/cgroup with the cpu,
	// memory and pids controllers.
	CgroupV2 Need = "cgroup-v2"
	// QEMU: qemu-system-x86_64 with its firmware, the peer the benchmarks
	// measure pmvm against on the same KVM. A lab host gets this
	// machine's (make deps installs it), its libraries and firmware.
	QEMU Need = "qemu"
	// DeviceDax: a device-dax instance the tests may overwrite, named by
	// $PMVM_TEST_DAX (never guessed: a host's /dev/dax0.0 holds someone's
	// data). A lab host makes one of 2 GiB from emulated pmem.
	DeviceDax Need = "device-dax"
	// LinuxGuest: a stock Linux guest (Debian's kernel, an initrd whose
	// /init starts qemu-ga on ttyS1 and prints "PMVM-GUEST ready"), named
	// by $PMVM_TEST_GUEST_KERNEL and $PMVM_TEST_GUEST_INITRD. A build
	// machine's own KVM may not boot one (README.md, "How the lab
	// works"); a lab host's does.
	LinuxGuest Need = "linux-guest"
)

// Environment variables naming what DeviceDax and LinuxGuest provide.
const (
	DaxEnv         = "PMVM_TEST_DAX"
	GuestKernelEnv = "PMVM_TEST_GUEST_KERNEL"
	GuestInitrdEnv = "PMVM_TEST_GUEST_INITRD"
)

const qemuBinary = "qemu-system-x86_64"

// qemuDataDirs hold QEMU's firmware (SeaBIOS, option ROMs); symlinks in
// them point into the others.
var qemuDataDirs = []string{"/usr/share/qemu", "/usr/share/seabios"}

func needList(needs []Need) string {
	if len(needs) == 0 {
		return "everything the tests need"
	}
	s := make([]string, len(needs))
	for i, n := range needs {
		s[i] = string(n)
	}
	return strings.Join(s, ", ")
}

// Missing says why this machine lacks n ("" when it has it).
func (n Need) Missing() string {
	switch n {
	case KVM:
		return kvmMissing()
	case HugePages2M:
		return hugeMissing("2048kB", "2MiB")
	case HugePages1G:
		return hugeMissing("1048576kB", "1GiB")
	case CgroupV2:
		return cgroupMissing()
	case DeviceDax:
		p := os.Getenv(DaxEnv)
		if p == "" {
			return "no device-dax instance for the tests ($" + DaxEnv + " unset)"
		}
		if st, err := os.Stat(p); err != nil || st.Mode()&os.ModeCharDevice == 0 {
			return fmt.Sprintf("$%s=%s is not a character device", DaxEnv, p)
		}
		return ""
	case LinuxGuest:
		for _, e := range []string{GuestKernelEnv, GuestInitrdEnv} {
			if p := os.Getenv(e); p == "" {
				return "no Linux guest image ($" + e + " unset; a stock Linux guest runs in a lab host)"
			} else if _, err := os.Stat(p); err != nil {
				return fmt.Sprintf("$%s: %v", e, err)
			}
		}
		return ""
	case QEMU:
		if _, err := exec.LookPath(qemuBinary); err != nil {
			return qemuBinary + " not found: install Debian's qemu-system-x86 (make deps)"
		}
		return ""
	}
	return fmt.Sprintf("unknown need %q", string(n))
}

// KVM ioctls (linux/kvm.h), kept here so that this package imports none
// of pmvm's: vmm/kvm's own tests use it.
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
	kvmAPIVersion    = 12
)

func kvmMissing() string {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Sprintf("no usable /dev/kvm (open: %v)", err)
	}
	defer unix.Close(fd)
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmGetAPIVersion, 0)
	if errno != 0 {
		return fmt.Sprintf("no usable /dev/kvm (KVM_GET_API_VERSION: %v)", errno)
	}
	if v != kvmAPIVersion {
		return fmt.Sprintf("no usable /dev/kvm (it speaks KVM API %d, not %d)", v, kvmAPIVersion)
	}
	vm, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmCreateVM, 0)
	if errno != 0 {
		return fmt.Sprintf("no usable /dev/kvm (KVM_CREATE_VM: %v)", errno)
	}
	unix.Close(int(vm))
	return ""
}

func hugeMissing(dir, size string) string {
	if _, err := os.Stat("/sys/kernel/mm/hugepages/hugepages-" + dir); err != nil {
		return fmt.Sprintf("no %s huge pages (/sys/kernel/mm/hugepages/hugepages-%s absent)", size, dir)
	}
	return ""
}

func cgroupMissing() string {
	b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if err != nil {
		return "no cgroup v2 hierarchy at /sys/fs/cgroup"
	}
	have := map[string]bool{}
	for _, c := range strings.Fields(string(b)) {
		have[c] = true
	}
	var lack []string
	for _, c := range []string{"cpu", "memory", "pids"} {
		if !have[c] {
			lack = append(lack, c)
		}
	}
	if len(lack) > 0 {
		return "cgroup v2 at /sys/fs/cgroup lacks the controllers " + strings.Join(lack, ", ")
	}
	return ""
}
