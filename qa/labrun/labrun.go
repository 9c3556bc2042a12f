// Package labrun runs a package's tests where the host facilities they
// need exist. A package whose tests need a KVM host (or 1 GiB huge pages,
// or cgroup v2 controllers) calls Main from its TestMain:
//
//	func TestMain(m *testing.M) { labrun.Main(m, labrun.KVM) }
//
// When this machine has every facility, the tests run here as usual. When
// it lacks one (a build machine that is itself a VM has no /dev/kvm), the
// package's own compiled test binary is run inside a lab host (Debian's
// kernel under QEMU TCG with nested KVM, qa/lab) that has them all: one lab
// host boot per package, with the same -test.run/-test.v/... flags; its
// output is relayed and its exit status becomes this binary's. A test never
// passes without having run: if the lab cannot be built or booted, the
// package fails, saying why.
//
// $PMVM_TEST_WHERE=lab forces the lab path (so both paths can be tested on
// a machine with /dev/kvm); =host forces this machine (a missing facility
// then fails its tests honestly). Each package's first output line says
// where its tests ran, and $PMVM_TEST_SUMMARY (a file) collects one record
// per package for make test's summary (qa/cmd/testsummary).
package labrun

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/pmvm/pmvm/qa/lab"
)

// Environment variables.
const (
	// WhereEnv forces where tests run: "lab" or "host" ("" or "auto":
	// this machine when it has every need, else the lab).
	WhereEnv = "PMVM_TEST_WHERE"
	// InsideEnv is set to 1 in the test process inside the lab host.
	InsideEnv = "PMVM_LABRUN_INSIDE"
	// KernelEnv names, inside the lab host, a real bzImage (the lab
	// host's own kernel) for tests that hand one to kexec_file_load.
	KernelEnv = "PMVM_TEST_KERNEL"
	// PMVMEnv names, inside the lab host, a static pmvm built from this
	// tree (there is no go command there to build one).
	PMVMEnv = "PMVM_TEST_PMVM"
)

// Runner runs a package's tests: a *testing.M, or a wrapper that sets
// something up around it where the tests really run.
type Runner interface{ Run() int }

// Main runs m where needs are met and exits with its status.
func Main(m Runner, needs ...Need) {
	os.Exit(run(m, needs))
}

func run(m Runner, needs []Need) int {
	pkg := packageDir()
	if os.Getenv(InsideEnv) == "1" {
		fmt.Printf("labrun: %s: tests running inside the lab host (Linux %s)\n", pkg, kernelRelease())
		return m.Run()
	}
	var lacks []string
	for _, n := range needs {
		if why := n.Missing(); why != "" {
			lacks = append(lacks, why)
		}
	}
	where := os.Getenv(WhereEnv)
	switch where {
	case "", "auto", "host", "lab":
	default:
		fmt.Printf("labrun: %s: %s=%q: want lab, host or auto\n", pkg, WhereEnv, where)
		return 2
	}
	inLab := where == "lab" || (where != "host" && len(lacks) > 0)
	t0 := time.Now()
	if !inLab {
		desc := "this machine has " + needList(needs)
		if len(lacks) > 0 {
			desc = fmt.Sprintf("forced by %s=host although this machine lacks: %s", WhereEnv, strings.Join(lacks, "; "))
		}
		fmt.Printf("labrun: %s: tests run on this machine (%s)\n", pkg, desc)
		code := m.Run()
		Append(Record{Kind: KindPackage, Name: pkg, Where: WhereHost, Code: code, Seconds: time.Since(t0).Seconds(), Note: desc})
		return code
	}
	if names, err := matchingTests(os.Args[1:]); err == nil && len(names) == 0 {
		// Nothing of this package's would run (go test ./... on a package
		// of benchmarks only): no lab host is booted to run nothing.
		fmt.Printf("labrun: %s: no test or benchmark matches here; nothing to run in a lab host\n", pkg)
		return m.Run()
	}
	reason := "forced by " + WhereEnv + "=lab"
	if where != "lab" {
		reason = "this machine lacks: " + strings.Join(lacks, "; ")
	}
	fmt.Printf("labrun: %s: tests run inside a lab host (%s)\n", pkg, reason)
	res := runInLab(pkg, needs)
	note := reason
	if res.note != "" {
		note += "; " + res.note
	}
	Append(Record{Kind: KindPackage, Name: pkg, Where: WhereLab, Code: res.code, Seconds: time.Since(t0).Seconds(), Note: note})
	if res.code != 0 {
		fmt.Printf("labrun: %s: FAIL in the lab host (exit %d)%s\n", pkg, res.code, suffix(res.note))
	}
	return res.code
}

// matchingTests lists (by running this binary with -test.list, which
// needs no KVM) the tests, examples, fuzz targets and benchmarks that the
// -test.run, -test.skip and -test.bench flags select.
func matchingTests(args []string) ([]string, error) {
	flags := map[string]string{"run": "", "skip": "", "bench": ""}
	for i := 0; i < len(args); i++ {
		name, v, ok := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		name = strings.TrimPrefix(name, "test.")
		if _, known := flags[name]; !known {
			continue
		}
		if !ok && i+1 < len(args) {
			i++
			v = args[i]
		}
		flags[name] = v
	}
	top := func(pattern string) (*regexp.Regexp, error) {
		first, _, _ := strings.Cut(pattern, "/")
		return regexp.Compile(first)
	}
	run, err := top(flags["run"])
	if err != nil {
		return nil, err
	}
	var skip, bench *regexp.Regexp
	if flags["skip"] != "" {
		if skip, err = top(flags["skip"]); err != nil {
			return nil, err
		}
	}
	if flags["bench"] != "" {
		if bench, err = top(flags["bench"]); err != nil {
			return nil, err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-test.list=.")
	cmd.Env = append(os.Environ(), InsideEnv+"=1")
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s -test.list: %w", exe, err)
	}
	var names []string
	for _, n := range strings.Split(string(out), "\n") {
		if !testNameRE.MatchString(n) {
			continue // labrun's own line, "ok ..."
		}
		var re *regexp.Regexp
		if strings.HasPrefix(n, "Benchmark") {
			re = bench
		} else {
			re = run
		}
		if re != nil && re.MatchString(n) && (skip == nil || !skip.MatchString(n)) {
			names = append(names, n)
		}
	}
	return names, nil
}

var testNameRE = regexp.MustCompile(`^(Test|Benchmark|Example|Fuzz)\w*$`)

func suffix(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

// packageDir names the package under test by its directory relative to
// the repository (go test runs a test binary in its package's directory).
func packageDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return "?"
	}
	root, err := lab.RepoRoot()
	if err != nil {
		return wd
	}
	rel, err := filepath.Rel(root, wd)
	if err != nil {
		return wd
	}
	return filepath.ToSlash(rel)
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
