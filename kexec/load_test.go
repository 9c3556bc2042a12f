package kexec

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// realKernel is the Debian bzImage the lab caches, if it is there.
func realKernel() string {
	m, _ := filepath.Glob(filepath.Join("..", ".cache", "extract", "linux-image-*-amd64", "boot", "vmlinuz-*"))
	if len(m) == 0 {
		return ""
	}
	abs, _ := filepath.Abs(m[0])
	return abs
}

// TestKexecFileLoadOnThisHost proves LoadFile, Loaded and Unload against
// this host's kernel without ever rebooting. Where the kernel has
// kexec_file_load (the lab host), a real bzImage is loaded, Loaded reports
// it, and Unload drops it. Where it has none (this build machine's kernel
// is built without CONFIG_KEXEC_FILE), LoadFile must fail with ENOSYS and a
// message saying exactly that, and Loaded must say kexec is missing: both
// outcomes are checked, neither is skipped. Reboot is never called.
func TestKexecFileLoadOnThisHost(t *testing.T) {
	kernel := realKernel()
	if kernel == "" {
		dir := t.TempDir()
		kernel = fakeBzImage(t, dir)
		t.Logf("the lab's Debian bzImage is not in .cache (build it with `go test ./qa/lab`); loading a header-only bzImage, which a kexec-capable kernel refuses with ENOEXEC")
	}
	status := HostStatus()
	t.Logf("kexec on this host: %+v", status)
	err := LoadFile(kernel, "", "console=ttyS0")
	switch {
	case err == nil:
		t.Cleanup(func() { Unload() })
		loaded, lerr := Loaded()
		require.NoError(t, lerr)
		assert.True(t, loaded, "kexec_loaded says 1 after a load")
		require.NoError(t, Unload())
		loaded, _ = Loaded()
		assert.False(t, loaded, "kexec_loaded says 0 after Unload")
		t.Logf("kexec_file_load of %s succeeded and was unloaded", kernel)
	case errors.Is(err, unix.ENOSYS):
		assert.Contains(t, err.Error(), "CONFIG_KEXEC_FILE")
		assert.Contains(t, err.Error(), kernel)
		assert.False(t, status.Supported && status.Problem == "", "a host without kexec_file_load reports a problem: %+v", status)
		_, lerr := Loaded()
		if lerr != nil {
			assert.Contains(t, lerr.Error(), "without kexec support")
		}
		t.Logf("this kernel has no kexec_file_load; the refusal reads: %v", err)
	case errors.Is(err, unix.ENOEXEC) && realKernel() == "":
		assert.Contains(t, err.Error(), "not a 64-bit bzImage")
	default:
		t.Fatalf("kexec_file_load of %s: unexpected error: %v", kernel, err)
	}

	// A file that is not a kernel never loads, and the error says why.
	err = LoadFile("/etc/hostname", "", "")
	require.Error(t, err)
	assert.True(t, errors.Is(err, unix.ENOEXEC) || errors.Is(err, unix.ENOSYS), "%v", err)
	assert.ErrorContains(t, LoadFile("/nonexistent/vmlinuz", "", ""), "no such file")
	assert.ErrorContains(t, LoadFile(kernel, "/nonexistent/initrd", ""), "initrd")
}

// TestLoadErrorsExplainTheErrno proves each kexec_file_load errno an
// operator can meet is explained: lockdown/secure boot (EPERM), not a
// bzImage (ENOEXEC), a rejected signature (EBADMSG, EKEYREJECTED), no
// kexec in the kernel (ENOSYS), and that the errno stays testable.
func TestLoadErrorsExplainTheErrno(t *testing.T) {
	for errno, want := range map[unix.Errno]string{
		unix.EPERM:        "signed",
		unix.ENOEXEC:      "not a 64-bit bzImage",
		unix.EBADMSG:      "signature",
		unix.EKEYREJECTED: "signature",
		unix.ENOSYS:       "CONFIG_KEXEC_FILE",
		unix.EBUSY:        "in progress",
	} {
		err := loadError("/boot/vmlinuz-new", "", errno)
		assert.Contains(t, err.Error(), want, "%v", errno)
		assert.Contains(t, err.Error(), "/boot/vmlinuz-new", "%v", errno)
		assert.True(t, errors.Is(err, errno))
	}
}

// TestCheckKernel proves the boot header check that the plan (and
// --dry-run) apply before anything is touched: a 64-bit bzImage loadable
// above 4 GiB passes with its version string; an ELF, a 32-bit-only image,
// an old boot protocol and a short file are refused, each saying why.
func TestCheckKernel(t *testing.T) {
	dir := t.TempDir()
	good := fakeBzImage(t, dir)
	bz, err := CheckKernel(good)
	require.NoError(t, err)
	assert.Equal(t, uint16(0x020f), bz.Protocol)
	assert.Equal(t, "6.99.0-test (fake)", bz.Version)

	b, err := os.ReadFile(good)
	require.NoError(t, err)
	write := func(name string, mutate func([]byte)) string {
		c := append([]byte(nil), b...)
		mutate(c)
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, c, 0o644))
		return p
	}
	_, err = CheckKernel(write("elf", func(c []byte) { copy(c, "\x7fELF"); copy(c[0x202:], "\x00\x00\x00\x00") }))
	assert.ErrorContains(t, err, "not a bzImage")
	_, err = CheckKernel(write("below4g", func(c []byte) { c[0x236] = 0x01 }))
	assert.ErrorContains(t, err, "cannot be loaded above 4GiB")
	_, err = CheckKernel(write("32bit", func(c []byte) { c[0x236] = 0x00 }))
	assert.ErrorContains(t, err, "not a 64-bit kernel")
	_, err = CheckKernel(write("old", func(c []byte) { c[0x206] = 0x0b }))
	assert.ErrorContains(t, err, "boot protocol 2.11")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tiny"), []byte("MZ"), 0o644))
	_, err = CheckKernel(filepath.Join(dir, "tiny"))
	assert.ErrorContains(t, err, "too short")

	if k := realKernel(); k != "" {
		bz, err := CheckKernel(k)
		require.NoError(t, err, "the Debian kernel is a kexec-loadable bzImage")
		t.Logf("%s: boot protocol %#x, %q", k, bz.Protocol, bz.Version)
	}
}

// TestCleanCmdline proves --reuse-cmdline drops the boot loader's
// BOOT_IMAGE= and keeps everything else, arguments for init included.
func TestCleanCmdline(t *testing.T) {
	assert.Equal(t, "root=/dev/vda1 ro quiet memmap=256M!4G",
		CleanCmdline("BOOT_IMAGE=/boot/vmlinuz-6.1.0-56-amd64 root=/dev/vda1 ro quiet memmap=256M!4G\n"))
	assert.Equal(t, "console=ttyS0 -- --init-arg BOOT_IMAGE=x", CleanCmdline("console=ttyS0 -- --init-arg BOOT_IMAGE=x"))
	assert.Equal(t, "", CleanCmdline("\n"))
	c, err := ReuseCmdline()
	require.NoError(t, err)
	assert.NotContains(t, c, "BOOT_IMAGE=")
}
