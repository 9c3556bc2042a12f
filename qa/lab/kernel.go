package lab

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ulikunitz/xz"
)

// Kernel is an extracted Debian kernel package.
type Kernel struct {
	Package    string // concrete package, e.g. linux-image-6.1.0-56-amd64
	Version    string // uname -r, e.g. 6.1.0-56-amd64
	Root       string // extraction directory
	BzImage    string // <Root>/boot/vmlinuz-<Version>
	ModulesDir string // <Root>/lib/modules/<Version>

	lab     *Lab
	modules map[string]string // module name (underscores) -> path
}

// Kernel fetches and extracts a kernel package (a metapackage such as
// Kernel61 or a concrete name such as linux-image-6.12.107+deb12-amd64).
func (l *Lab) Kernel(pkg string) (*Kernel, error) {
	dir, err := l.Package(pkg)
	if err != nil {
		return nil, err
	}
	vers, _ := filepath.Glob(filepath.Join(dir, "lib", "modules", "*"))
	if len(vers) != 1 {
		return nil, fmt.Errorf("lab: %s: expected exactly one lib/modules/<version>, found %v", dir, vers)
	}
	k := &Kernel{
		Package:    filepath.Base(dir),
		Version:    filepath.Base(vers[0]),
		Root:       dir,
		ModulesDir: vers[0],
		lab:        l,
	}
	k.BzImage = filepath.Join(dir, "boot", "vmlinuz-"+k.Version)
	if !exists(k.BzImage) {
		return nil, fmt.Errorf("lab: %s has no boot/vmlinuz-%s", dir, k.Version)
	}
	return k, nil
}

// Vmlinux returns the path of the kernel's vmlinux ELF (for a PVH boot with
// QEMU -kernel), extracting it into <cache>/vmlinux/ on first use.
func (k *Kernel) Vmlinux() (string, error) {
	out := filepath.Join(k.lab.Cache, "vmlinux", "vmlinux-"+k.Version)
	err := k.lab.locked(func() error {
		if exists(out) {
			return nil
		}
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		k.lab.Logf("lab: extracting vmlinux from %s", k.BzImage)
		return ExtractVmlinuxFile(k.BzImage, out)
	})
	return out, err
}

// modName normalizes a module name or file name: kvm-amd.ko.xz -> kvm_amd.
func modName(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

func (k *Kernel) index() error {
	if k.modules != nil {
		return nil
	}
	m := map[string]string{}
	err := filepath.WalkDir(filepath.Join(k.ModulesDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".ko") || strings.HasSuffix(p, ".ko.xz")) {
			m[modName(p)] = p
		}
		return nil
	})
	if err != nil {
		return err
	}
	k.modules = m
	return nil
}

// Module is one kernel module ready to go into an image.
type Module struct {
	Name string // normalized name, e.g. kvm_amd
	Path string // host path (.ko or .ko.xz)
	File string // file name in the image, always .ko (decompressed), e.g. kvm-amd.ko
}

// Data returns the module's bytes, decompressing .ko.xz.
func (m Module) Data() ([]byte, error) { return ReadModule(m.Path) }

// ModuleLoadOrder returns the named modules and all their dependencies in an
// order that insmod can load them (dependencies first, each once).
//
// Debian's packages ship no modules.dep (depmod runs at install time), so the
// dependencies come from each module's own .modinfo "depends=" field — the
// same data depmod uses. A modules.dep, when present, is not needed.
func (k *Kernel) ModuleLoadOrder(names ...string) ([]Module, error) {
	if err := k.index(); err != nil {
		return nil, err
	}
	var order []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		name = modName(name)
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		}
		path, ok := k.modules[name]
		if !ok {
			return fmt.Errorf("module %s not found in %s (built in? check modules.builtin)", name, k.ModulesDir)
		}
		state[name] = 1
		data, err := ReadModule(path)
		if err != nil {
			return err
		}
		info, err := ModInfo(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if deps := info["depends"]; deps != "" {
			for _, d := range strings.Split(deps, ",") {
				if err := visit(d, append(chain, name)); err != nil {
					return err
				}
			}
		}
		state[name] = 2
		file := filepath.Base(path)
		file = strings.TrimSuffix(file, ".xz")
		order = append(order, Module{Name: name, Path: path, File: file})
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return nil, fmt.Errorf("lab: %s: %w", k.Package, err)
		}
	}
	return order, nil
}

// ReadModule reads a kernel module file, decompressing .ko.xz (Debian's 6.12
// packages) so that busybox insmod can load it.
func ReadModule(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if !strings.HasSuffix(path, ".xz") {
		return io.ReadAll(f)
	}
	data, err := DecompressXZ(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

// DecompressXZ decompresses a whole .xz stream (as kmod writes .ko.xz: CRC32
// check, LZMA2, no BCJ) with github.com/ulikunitz/xz.
func DecompressXZ(r io.Reader) ([]byte, error) {
	xr, err := xz.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	var out bytes.Buffer
	if _, err := io.Copy(&out, xr); err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	return out.Bytes(), nil
}

// ModInfo parses the .modinfo section of a (decompressed) kernel module into
// key=value pairs (the last value wins for repeated keys such as alias).
func ModInfo(ko []byte) (map[string]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	b, err := sec.Data()
	if err != nil {
		return nil, err
	}
	info := map[string]string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			info[k] = v
		}
	}
	return info, nil
}
