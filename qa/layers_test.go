package qa

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

// The package map (README "Layout"): which of our packages each package
// may import directly. A package not listed may import anything of ours
// except what forbiddenDeps rules out. A prefix ending in "/..." matches
// the package and everything under it.
var allowedImports = map[string][]string{
	"pmem/memspec":    {},
	"pmem/flock":      {},
	"vmm/x86/bzimage": {},
	"vmm/kvm":         {},
	"vmm/acpi":        {},
	"vmm/seccomp":     {},
	"guestpm":         {},
	"configs":         {"pmem/memspec"},
	"state":           {"pmem/memspec"},
	"pmem":            {"pmem/memspec", "pmem/flock"},
	"vmm/x86":         {"vmm/kvm", "vmm/x86/bzimage", "pmem/memspec"},
	"vmm/devices/...": {"vmm/devices/...", "state"},
	"vmm/cgroup":      {"configs", "pmem/memspec"},
	"vmm/timeline":    {"state"},
}

// forbiddenDeps: the package must not depend on these, even indirectly.
var forbiddenDeps = map[string][]string{
	// pmvm run, the benchmarks and restart mode must not carry the host update.
	"vmm/lifecycle": {"kexec", "cmd/...", "qa/..."},
	"vmm/...":       {"kexec", "cmd/...", "qa/..."},
	"kexec":         {"cmd/...", "qa/..."},
	"configs":       {"qa/...", "cmd/..."},
	"state":         {"qa/...", "cmd/..."},
	"pmem/...":      {"qa/...", "cmd/..."},
	"guestpm":       {"qa/...", "cmd/..."},
	// Device models never touch KVM.
	"vmm/devices/...": {"vmm/kvm"},
}

type listedPackage struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func matches(pattern, pkg string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

// ours lists this module's packages with their imports and dependencies,
// paths relative to the module.
func ours(t *testing.T) []listedPackage {
	t.Helper()
	modOut, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	module := strings.TrimSpace(string(modOut)) + "/"
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", module+"...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	strip := func(paths []string) []string {
		var r []string
		for _, p := range paths {
			if rel, ok := strings.CutPrefix(p, module); ok {
				r = append(r, rel)
			}
		}
		return r
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p listedPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("go list output: %v", err)
		}
		p.ImportPath = strings.TrimPrefix(p.ImportPath, module)
		p.Imports, p.Deps = strip(p.Imports), strip(p.Deps)
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found only %d packages of ours; the module is bigger", len(pkgs))
	}
	return pkgs
}

// TestPackageLayers proves the package map holds: leaves import nothing of
// ours, device models never reach KVM, and neither the VMM nor the
// lifecycle depends on the host-update package.
func TestPackageLayers(t *testing.T) {
	pkgs := ours(t)
	seen := map[string]bool{}
	for _, p := range pkgs {
		seen[p.ImportPath] = true
		for pattern, allowed := range allowedImports {
			if !matches(pattern, p.ImportPath) {
				continue
			}
			for _, imp := range p.Imports {
				ok := false
				for _, a := range allowed {
					ok = ok || matches(a, imp)
				}
				if !ok {
					t.Errorf("%s imports %s; the package map allows it only %v", p.ImportPath, imp, allowed)
				}
			}
		}
		for pattern, forbidden := range forbiddenDeps {
			if !matches(pattern, p.ImportPath) {
				continue
			}
			for _, dep := range p.Deps {
				for _, f := range forbidden {
					if matches(f, dep) {
						t.Errorf("%s depends on %s (rule %s must not reach %s)", p.ImportPath, dep, pattern, f)
					}
				}
			}
		}
	}
	// A rule naming a package that no longer exists checks nothing.
	var stale []string
	for _, rules := range []map[string][]string{allowedImports, forbiddenDeps} {
		for pattern := range rules {
			found := false
			for pkg := range seen {
				found = found || matches(pattern, pkg)
			}
			if !found {
				stale = append(stale, pattern)
			}
		}
	}
	sort.Strings(stale)
	if len(stale) > 0 {
		t.Errorf("package map rules name packages that do not exist: %v", stale)
	}
}

// TestOtherTargetsRefuseToBuild proves that the x86-only code says so: a
// build of pmvm for linux/arm64 fails on the guard's undefined name (see
// vmm/kvm/unsupported.go) instead of compiling a VMM that cannot work.
func TestOtherTargetsRefuseToBuild(t *testing.T) {
	modOut, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	cmd := exec.Command("go", "build", "-o", t.TempDir()+"/pmvm", strings.TrimSpace(string(modOut))+"/cmd/pmvm")
	cmd.Env = append(cmd.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("pmvm built for linux/arm64; the x86-only packages must refuse other targets")
	}
	const guard = "undefined: pmvm_runs_only_on_linux_amd64"
	if !strings.Contains(string(out), guard) {
		t.Fatalf("the linux/arm64 build failed without the guard's message %q:\n%s", guard, out)
	}
}
