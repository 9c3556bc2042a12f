package lab

import (
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/stretchr/testify/require"
	"github.com/ulikunitz/xz"
)

func TestImageRoundTrip(t *testing.T) {
	host := filepath.Join(t.TempDir(), "hostfile")
	require.NoError(t, os.WriteFile(host, []byte("from the host\n"), 0o600))

	im := NewImage()
	im.Dir("/etc", 0o755)
	im.File("/etc/motd", []byte("hello\n"), 0o644)
	im.File("/etc/motd", []byte("replaced\n"), 0o640) // replaces in place
	im.HostFile("opt/x/hostfile", host, 0o755)        // parents added
	im.Symlink("/bin/sh", "busybox")
	im.BasicDevices()
	require.Equal(t, []string{"etc", "etc/motd", "opt", "opt/x", "opt/x/hostfile", "bin", "bin/sh",
		"dev", "dev/console", "dev/null", "dev/tty", "dev/ttyS0", "dev/kmsg"}, im.Names())

	var buf bytes.Buffer
	n, err := im.WriteTo(&buf)
	require.NoError(t, err)
	require.EqualValues(t, buf.Len(), n)

	type got struct {
		mode cpio.FileMode
		data string
		link string
	}
	entries := map[string]got{}
	var order []string
	r := cpio.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		b, err := io.ReadAll(r)
		require.NoError(t, err)
		entries[h.Name] = got{h.Mode, string(b), h.Linkname}
		order = append(order, h.Name)
	}
	require.Equal(t, im.Names(), order)
	require.Equal(t, got{cpio.TypeDir | 0o755, "", ""}, entries["etc"])
	require.Equal(t, got{cpio.TypeReg | 0o640, "replaced\n", ""}, entries["etc/motd"])
	require.Equal(t, got{cpio.TypeReg | 0o755, "from the host\n", ""}, entries["opt/x/hostfile"])
	require.Equal(t, got{cpio.TypeSymlink | 0o777, "", "busybox"}, entries["bin/sh"])
	require.Equal(t, cpio.FileMode(cpio.TypeChar|0o600), entries["dev/console"].mode)

	// The library does not expose rdev: check the raw newc fields.
	for name, want := range map[string][2]int64{"dev/console": {5, 1}, "dev/null": {1, 3}, "dev/ttyS0": {4, 64}} {
		i := bytes.Index(buf.Bytes(), []byte(name+"\x00"))
		require.GreaterOrEqual(t, i, 110, name)
		hdr := buf.Bytes()[i-110 : i]
		require.Equal(t, "070701", string(hdr[:6]), name)
		major, _ := strconv.ParseInt(string(hdr[78:86]), 16, 64)
		minor, _ := strconv.ParseInt(string(hdr[86:94]), 16, 64)
		require.Equal(t, want, [2]int64{major, minor}, name)
	}
}

func TestReadModuleXZ(t *testing.T) {
	// A stand-in "module": the decompression must give back the exact bytes.
	payload := bytes.Repeat([]byte("\x7fELF module bytes 0123456789\n"), 5000)
	dir := t.TempDir()

	var xzbuf bytes.Buffer
	w, err := xz.NewWriter(&xzbuf)
	require.NoError(t, err)
	_, err = w.Write(payload)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	p := filepath.Join(dir, "a.ko.xz")
	require.NoError(t, os.WriteFile(p, xzbuf.Bytes(), 0o644))
	got, err := ReadModule(p)
	require.NoError(t, err)
	require.Equal(t, payload, got)

	// The way kmod/Debian compress modules: xz --check=crc32 --lzma2=dict=1MiB.
	if xzCLI, err := exec.LookPath("xz"); err == nil {
		raw := filepath.Join(dir, "b.ko")
		require.NoError(t, os.WriteFile(raw, payload, 0o644))
		out, err := exec.Command(xzCLI, "--check=crc32", "--lzma2=dict=1MiB", "-k", raw).CombinedOutput()
		require.NoError(t, err, string(out))
		got, err := ReadModule(raw + ".xz")
		require.NoError(t, err)
		require.Equal(t, payload, got)
	} else {
		t.Log("xz CLI (xz-utils) not installed: skipped the cross-check with xz-compressed input")
	}

	// Plain .ko files pass through.
	plain := filepath.Join(dir, "c.ko")
	require.NoError(t, os.WriteFile(plain, payload, 0o644))
	got, err = ReadModule(plain)
	require.NoError(t, err)
	require.Equal(t, payload, got)
	require.Equal(t, "kvm_amd", modName("/x/kvm-amd.ko.xz"))
}

func TestVMConfigTOML(t *testing.T) {
	want := `name = "labguest"
mode = "none"
vcpus = 2
[boot]
kernel = "/lab/guest/vmlinuz"
initrd = "/lab/guest/initrd.cpio"
cmdline = "console=ttyS0 panic=-1 quiet"
[[memory]]
name = "ram0"
size = "512MiB"
backing = "anonymous"
shared = true
[console]
output = "stdout"
[agent]
socket = "/run/pmvm/labguest/agent.sock"
[control]
socket = "/run/pmvm/labguest/control.sock"
`
	require.Equal(t, want, string(DefaultGuestConfig().TOML()))
}

// realKernel returns the cached 6.1 kernel, downloading it if the cache is cold.
func realKernel(t *testing.T) (*Lab, *Kernel) {
	t.Helper()
	l, err := New(t.Logf)
	require.NoError(t, err)
	k, err := l.Kernel(Kernel61)
	require.NoError(t, err)
	return l, k
}

func TestExtractVmlinuxRealKernel(t *testing.T) {
	_, k := realKernel(t)
	bz, err := os.ReadFile(k.BzImage)
	require.NoError(t, err)
	t0 := time.Now()
	out, err := ExtractVmlinux(bz) // also verifies the block CRC32
	require.NoError(t, err)
	t.Logf("%s: %d bytes bzImage -> %d bytes vmlinux in %v", k.Version, len(bz), len(out), time.Since(t0))
	f, err := elf.NewFile(bytes.NewReader(out))
	require.NoError(t, err)
	require.Equal(t, elf.EM_X86_64, f.Machine)
	require.Equal(t, elf.ET_EXEC, f.Type)
	// PVH boot needs the XEN_ELFNOTE_PHYS32_ENTRY note (type 18).
	require.True(t, hasPVHNote(f), "vmlinux has no PVH entry note")

	// Cross-check with xz-utils when present (the stream ends before the bzImage does).
	if xzCLI, err := exec.LookPath("xz"); err == nil {
		cmd := exec.Command(xzCLI, "-dc", "--single-stream")
		cmd.Stdin = bytes.NewReader(bz[bytes.Index(bz, xzMagic):])
		ref, err := cmd.Output()
		require.NoError(t, err)
		require.True(t, bytes.Equal(ref, out), "differs from xz -dc")
	}
	// Corruption is detected.
	bad := bytes.Clone(bz)
	bad[bytes.Index(bz, xzMagic)+100000] ^= 0x55
	_, err = ExtractVmlinux(bad)
	require.Error(t, err)
}

func hasPVHNote(f *elf.File) bool {
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return false
		}
		for len(b) >= 12 {
			nsz, dsz := int(le32(b[0:])), int(le32(b[4:]))
			typ := le32(b[8:])
			name := b[12:min(len(b), 12+nsz)]
			if typ == 18 && bytes.HasPrefix(name, []byte("Xen")) {
				return true
			}
			adv := 12 + (nsz+3)&^3 + (dsz+3)&^3
			if adv > len(b) {
				break
			}
			b = b[adv:]
		}
	}
	return false
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func TestModuleLoadOrderRealKernel(t *testing.T) {
	_, k := realKernel(t)
	mods, err := k.ModuleLoadOrder(DefaultHostModules...)
	require.NoError(t, err)
	pos := map[string]int{}
	var names []string
	for i, m := range mods {
		pos[m.Name] = i
		names = append(names, m.Name)
		data, err := m.Data()
		require.NoError(t, err)
		info, err := ModInfo(data)
		require.NoError(t, err)
		require.Equal(t, m.Name, info["name"])
		require.Equal(t, k.Version, fieldBefore(info["vermagic"]), "vermagic of %s", m.Name)
	}
	t.Logf("load order: %v", names)
	for _, n := range []string{"irqbypass", "ccp", "kvm", "kvm_amd"} {
		require.Contains(t, pos, n)
	}
	require.Less(t, pos["irqbypass"], pos["kvm"])
	require.Less(t, pos["kvm"], pos["kvm_amd"])
	require.Less(t, pos["ccp"], pos["kvm_amd"])
	require.Equal(t, len(mods)-1, pos["kvm_amd"])
}

func fieldBefore(s string) string {
	for i, c := range s {
		if c == ' ' {
			return s[:i]
		}
	}
	return s
}
