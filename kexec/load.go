package kexec

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/vmm/x86/bzimage"
)

// Files the loader reads; tests never change them.
const (
	kexecLoadedPath   = "/sys/kernel/kexec_loaded"
	kexecDisabledPath = "/proc/sys/kernel/kexec_load_disabled"
	lockdownPath      = "/sys/kernel/security/lockdown"
	procCmdline       = "/proc/cmdline"
	systemdRunDir     = "/run/systemd/system"
)

// LoadFile loads kernel (a bzImage) and initrd ("" for none) with cmdline
// as the next kernel, with kexec_file_load(2). Nothing reboots: Reboot or
// SystemdKexec does that. Loading again replaces the loaded kernel; a failed
// load leaves the previous one (if any) loaded. Errors say what the errno
// means here: lockdown or secure boot (EPERM), not a bzImage (ENOEXEC), a
// rejected signature (EBADMSG, EKEYREJECTED, ENOKEY), a kernel built
// without CONFIG_KEXEC_FILE (ENOSYS).
func LoadFile(kernel, initrd, cmdline string) error {
	if len(cmdline) > MaxCmdline {
		return fmt.Errorf("kexec: command line is %d bytes; the kernel takes at most %d", len(cmdline), MaxCmdline)
	}
	k, err := os.Open(kernel)
	if err != nil {
		return fmt.Errorf("kexec: kernel: %w", err)
	}
	defer k.Close()
	initrdFd, flags := -1, 0
	if initrd == "" {
		flags |= unix.KEXEC_FILE_NO_INITRAMFS
	} else {
		f, err := os.Open(initrd)
		if err != nil {
			return fmt.Errorf("kexec: initrd: %w", err)
		}
		defer f.Close()
		initrdFd = int(f.Fd())
	}
	if err := unix.KexecFileLoad(int(k.Fd()), initrdFd, cmdline, flags); err != nil {
		return loadError(kernel, initrd, err)
	}
	return nil
}

// MaxCmdline is the longest command line kexec_file_load takes on x86
// (COMMAND_LINE_SIZE 2048 including the NUL).
const MaxCmdline = 2047

// Unload drops the loaded kernel, if any. Unloading when nothing is loaded
// is not an error.
func Unload() error {
	if err := unix.KexecFileLoad(-1, -1, "", unix.KEXEC_FILE_UNLOAD); err != nil {
		return loadError("", "", err)
	}
	return nil
}

// Loaded reports whether a kernel is loaded for kexec
// (/sys/kernel/kexec_loaded).
func Loaded() (bool, error) {
	b, err := os.ReadFile(kexecLoadedPath)
	if errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("kexec: %s does not exist: this kernel was built without kexec support (CONFIG_KEXEC_CORE)", kexecLoadedPath)
	}
	if err != nil {
		return false, fmt.Errorf("kexec: %w", err)
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

// Reboot syncs the filesystems and reboots into the loaded kernel at once,
// without stopping any service. It returns only on failure. Under systemd
// prefer SystemdKexec, which stops the services first.
func Reboot() error {
	if ok, err := Loaded(); err == nil && !ok {
		return errors.New("kexec: no kernel is loaded; refusing to reboot (load one with LoadFile first)")
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_KEXEC); err != nil {
		return fmt.Errorf("kexec: reboot(LINUX_REBOOT_CMD_KEXEC): %w", err)
	}
	return nil
}

// SystemdRunning reports whether systemd is the init system
// (/run/systemd/system exists, as sd_booted(3) checks).
func SystemdRunning() bool {
	fi, err := os.Stat(systemdRunDir)
	return err == nil && fi.IsDir()
}

// SystemdKexec hands the reboot to systemd: `systemctl kexec` stops every
// service and unmounts the filesystems, then kexecs the loaded kernel. It
// returns once systemd has accepted the job; this process is stopped with
// the rest.
func SystemdKexec() error {
	if !SystemdRunning() {
		return errors.New("kexec: systemd is not running (no /run/systemd/system); use Reboot")
	}
	if ok, err := Loaded(); err == nil && !ok {
		return errors.New("kexec: no kernel is loaded; systemctl kexec would load the boot loader's default instead: refusing")
	}
	out, err := exec.Command("systemctl", "kexec").CombinedOutput()
	if err != nil {
		return fmt.Errorf("kexec: systemctl kexec: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ReuseCmdline returns this kernel's command line (/proc/cmdline) for the
// next one, without the boot loader's BOOT_IMAGE= (which names this
// kernel's image, not the next).
func ReuseCmdline() (string, error) {
	b, err := os.ReadFile(procCmdline)
	if err != nil {
		return "", fmt.Errorf("kexec: %w", err)
	}
	return CleanCmdline(string(b)), nil
}

// CleanCmdline drops BOOT_IMAGE= and surrounding whitespace from a
// command line read from /proc/cmdline. Everything after "--" (arguments
// for init) is kept as is.
func CleanCmdline(s string) string {
	fields := strings.Fields(s)
	out := fields[:0]
	for i, f := range fields {
		if f == "--" {
			out = append(out, fields[i:]...)
			break
		}
		if strings.HasPrefix(f, "BOOT_IMAGE=") {
			continue
		}
		out = append(out, f)
	}
	return strings.Join(out, " ")
}

// BzImage is what CheckKernel learned from a kernel's boot header.
type BzImage struct {
	Protocol   uint16 // boot protocol version, e.g. 0x020f
	XLoadFlags uint16
	Version    string // the kernel_version string, when present
}

// Release is the kernel's release, the first word of its kernel_version
// string ("6.12.100-amd64 (debian-kernel@...) #1 SMP ..."), or "" when it
// has none: the string comes from the image, and may be blank.
func (b *BzImage) Release() string {
	if b == nil {
		return ""
	}
	if w := strings.Fields(b.Version); len(w) > 0 {
		return w[0]
	}
	return ""
}

// CheckKernel reads the boot header of kernel and refuses what
// kexec_file_load's x86-64 loader would refuse: not a bzImage, a boot
// protocol older than 2.12, not 64-bit, not loadable above 4 GiB. It reads
// the file only.
func CheckKernel(kernel string) (*BzImage, error) {
	f, err := os.Open(kernel)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	hdr := make([]byte, bzimage.HeaderSize)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return nil, fmt.Errorf("kernel %s is not a bzImage: too short for a boot header", kernel)
	}
	h, err := bzimage.Parse(hdr)
	if err != nil {
		return nil, fmt.Errorf("kernel %s is not a bzImage (%v; an ELF vmlinux cannot be loaded by kexec_file_load)", kernel, err)
	}
	bz := &BzImage{Protocol: h.Protocol, XLoadFlags: h.XLoadFlags}
	if bz.Protocol < bzimage.MinProtocol64 {
		return bz, fmt.Errorf("kernel %s has boot protocol %s; kexec_file_load needs 2.12 or newer", kernel, h.ProtocolString())
	}
	if bz.XLoadFlags&bzimage.XLFKernel64 == 0 {
		return bz, fmt.Errorf("kernel %s is not a 64-bit kernel (xloadflags %#x)", kernel, bz.XLoadFlags)
	}
	if bz.XLoadFlags&bzimage.XLFAbove4G == 0 {
		return bz, fmt.Errorf("kernel %s cannot be loaded above 4GiB (xloadflags %#x); kexec_file_load needs that", kernel, bz.XLoadFlags)
	}
	bz.Version = h.KernelVersion(f)
	return bz, nil
}

// Status is the host's kexec readiness, for the update plan.
type Status struct {
	Supported bool   // the kernel has kexec (kexec_loaded exists)
	Loaded    bool   // a kernel is loaded now
	Disabled  bool   // kernel.kexec_load_disabled = 1
	Lockdown  string // the active lockdown mode ("none", "integrity", "confidentiality"), "" if unknown
	Problem   string // why an update cannot kexec here, "" if none is known
}

// HostStatus reads what the host says about kexec without loading anything.
func HostStatus() Status {
	var s Status
	loaded, err := Loaded()
	if err != nil {
		s.Problem = err.Error()
	} else {
		s.Supported, s.Loaded = true, loaded
	}
	if b, err := os.ReadFile(kexecDisabledPath); err == nil && strings.TrimSpace(string(b)) == "1" {
		s.Disabled = true
		s.Problem = "kexec is disabled until the next reboot (kernel.kexec_load_disabled = 1)"
	}
	s.Lockdown = lockdownMode()
	return s
}

// lockdownMode returns the bracketed mode of /sys/kernel/security/lockdown
// ("none [integrity] confidentiality" -> "integrity").
func lockdownMode() string {
	b, err := os.ReadFile(lockdownPath)
	if err != nil {
		return ""
	}
	s := string(b)
	i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return ""
	}
	return s[i+1 : j]
}

// loadError explains a kexec_file_load errno.
func loadError(kernel, initrd string, err error) error {
	var why string
	switch {
	case errors.Is(err, unix.EPERM):
		why = "not permitted: kexec needs CAP_SYS_BOOT"
		if b, e := os.ReadFile(kexecDisabledPath); e == nil && strings.TrimSpace(string(b)) == "1" {
			why += "; and kexec is disabled until the next reboot (kernel.kexec_load_disabled = 1)"
		}
		if m := lockdownMode(); m != "" && m != "none" {
			why += fmt.Sprintf("; the kernel is locked down (%s, usually because of UEFI secure boot) and accepts only a kernel signed with a trusted key", m)
		} else {
			why += "; with UEFI secure boot or kernel lockdown only a signed kernel is accepted"
		}
	case errors.Is(err, unix.ENOEXEC):
		why = fmt.Sprintf("%s is not a kernel this loader accepts: not a 64-bit bzImage (an ELF vmlinux or a compressed image cannot be kexec'd with kexec_file_load)", kernel)
	case errors.Is(err, unix.EBADMSG), errors.Is(err, unix.EKEYREJECTED), errors.Is(err, unix.ENOKEY), errors.Is(err, unix.ENOPKG):
		why = fmt.Sprintf("the signature of %s is missing or not trusted (kernel signature verification is enforced: CONFIG_KEXEC_SIG_FORCE, secure boot or lockdown); sign it with a key in the kernel's keyring", kernel)
	case errors.Is(err, unix.ENOSYS):
		why = "this kernel has no kexec_file_load (built without CONFIG_KEXEC_FILE): it cannot kexec into a new kernel; update it by a full reboot or build it with CONFIG_KEXEC_FILE=y"
	case errors.Is(err, unix.EBUSY):
		why = "another kexec load or a kexec reboot is in progress"
	case errors.Is(err, unix.ENOMEM), errors.Is(err, unix.EADDRNOTAVAIL):
		why = "no room for the new kernel and initrd in memory"
	case errors.Is(err, unix.EINVAL):
		why = "the kernel rejected the arguments (command line too long, or a kernel/initrd the loader cannot place)"
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EBADF):
		why = "a file could not be read"
	default:
		why = "unexpected error"
	}
	what := "kexec_file_load"
	if kernel != "" {
		what += " " + kernel
		if initrd != "" {
			what += " (initrd " + initrd + ")"
		}
	}
	return &LoadError{Errno: err, Msg: fmt.Sprintf("kexec: %s: %v: %s", what, err, why)}
}

// LoadError is a failed kexec_file_load with its errno and what it means.
type LoadError struct {
	Errno error
	Msg   string
}

func (e *LoadError) Error() string { return e.Msg }
func (e *LoadError) Unwrap() error { return e.Errno }
