package lab

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cavaliergopher/cpio"
	"github.com/stretchr/testify/require"
)

func TestParseLdd(t *testing.T) {
	out := `	linux-vdso.so.1 (0x00007ffd)
	libudev.so.1 => /lib/x86_64-linux-gnu/libudev.so.1 (0x00007f34)
	libiniparser.so.1 => not found
	libglib-2.0.so.0 => /usr/lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x00007f34)
	/lib64/ld-linux-x86-64.so.2 (0x00007f34)
`
	r, err := ParseLdd(out)
	require.NoError(t, err)
	require.Equal(t, []LddLib{
		{"libudev.so.1", "/lib/x86_64-linux-gnu/libudev.so.1"},
		{"libglib-2.0.so.0", "/usr/lib/x86_64-linux-gnu/libglib-2.0.so.0"},
	}, r.Libs)
	require.Equal(t, "/lib64/ld-linux-x86-64.so.2", r.Interp)
	require.Equal(t, []string{"libiniparser.so.1"}, r.Missing)

	_, err = ParseLdd("\tnot a dynamic executable\n")
	require.Error(t, err)
}

func TestParseDependsAndSonames(t *testing.T) {
	require.Equal(t, []string{"libc6", "libglib2.0-0", "libfoo1", "libz"},
		ParseDepends("libc6 (>= 2.34), libglib2.0-0 (>= 2.63.3), libfoo1 | libbar1,libz:amd64 (>= 1)"))
	require.Empty(t, ParseDepends(""))
	for so, pkg := range map[string]string{
		"libiniparser.so.1": "libiniparser1",
		"libjson-c.so.5":    "libjson-c5",
		"libndctl.so.6":     "libndctl6",
		"libfoo-2.0.so.0":   "libfoo-2.0-0",
		"libc.so":           "",
	} {
		require.Equal(t, pkg, sonamePackage(so), so)
	}
}

// extractCpio unpacks a newc archive into dir (device nodes skipped).
func extractCpio(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	require.NoError(t, err)
	defer f.Close()
	r := cpio.NewReader(f)
	for {
		h, err := r.Next()
		if err == io.EOF {
			return
		}
		require.NoError(t, err)
		p := filepath.Join(dir, h.Name)
		switch h.Mode &^ cpio.ModePerm {
		case cpio.TypeDir:
			require.NoError(t, os.MkdirAll(p, 0o755))
		case cpio.TypeReg:
			b, err := io.ReadAll(r)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(p, b, os.FileMode(h.Mode.Perm())))
		case cpio.TypeSymlink:
			require.NoError(t, os.Symlink(h.Linkname, p))
		}
	}
}

// TestDynamicToolsRunInChroot builds an image holding busybox, qemu-ga,
// ndctl and daxctl with the libraries AddDynamic picked, unpacks it and
// runs each program's --version chrooted into it: the copied set of
// libraries and the loader path are complete (no QEMU needed).
func TestDynamicToolsRunInChroot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("FAIL, not skipped: needs root (chroot)")
	}
	l, err := New(t.Logf)
	require.NoError(t, err)
	im, err := l.busyboxImage("#!/bin/sh\n")
	require.NoError(t, err)
	for _, d := range []struct{ pkg, bin string }{
		{GuestAgentPackage, "usr/sbin/qemu-ga"},
		{NdctlPackage, "usr/bin/ndctl"},
		{DaxctlPackage, "usr/bin/daxctl"},
	} {
		files, err := l.AddDynamic(im, d.pkg, d.bin)
		require.NoError(t, err)
		t.Logf("%s: libs %v (downloaded %v)", d.bin, files.Libs, files.Packages)
	}
	archive := filepath.Join(t.TempDir(), "tools.cpio")
	require.NoError(t, im.WriteFile(archive))
	root := t.TempDir()
	extractCpio(t, archive, root)

	for bin, want := range map[string]string{
		"/usr/sbin/qemu-ga": "7.2",
		"/usr/bin/ndctl":    "76",
		"/usr/bin/daxctl":   "76",
	} {
		cmd := exec.Command(bin, "--version")
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		require.NoError(t, cmd.Run(), "%s --version in the image:\n%s", bin, out.String())
		require.Contains(t, out.String(), want, bin)
		t.Logf("%s --version: %s", bin, strings.TrimSpace(out.String()))
	}
}
