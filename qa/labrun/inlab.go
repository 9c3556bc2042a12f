package labrun

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pmvm/pmvm/pmem/flock"
	"github.com/pmvm/pmvm/qa/lab"
)

// In the lab host.
const (
	labBinDir  = "/lab/bin"            // this test binary, under its own name (tests see it in ps)
	labSrc     = "/src"                // the repository's files; tests run in their package's directory here
	labScratch = "/scratch"            // an ext4 disk: TMPDIR lives here, as on a real host (not the initramfs's tmpfs)
	labKernel  = "/lab/kernel/vmlinuz" // a real bzImage for kexec_file_load (KernelEnv)
	labPmvm    = "/lab/pmvm"           // a static pmvm (PMVMEnv)
	labDax     = "/dev/dax0.0"         // DeviceDax: made by ndctl from the memmap= region
)

// DeviceDax's region: 2 GiB of emulated pmem at 4 GiB (RAM above 4 GiB
// starts there on q35 with more than 2 GiB; README.md, "How the lab works").
const daxMemmap = "memmap=2G!4G"

// guestInit is LinuxGuest's /init: the agent on ttyS1, then idle
// (scripts/guest-idle.sh).
var guestInit = lab.InitPrelude + lab.GuestAgentStart + script("guest-idle.sh")

// scratchModules give the lab host its ext4 scratch disk (virtio-blk).
var scratchModules = []string{"virtio_pci", "virtio_blk", "crc32c_generic", "ext4"}

// labHostMiB: room for the tests' guests, a 4 GiB /dev/shm backing of
// the benchmarks, and a 1 GiB huge page.
const (
	labHostMiB   = 6144
	scratchBytes = 2 << 30
)

// hostShape is the lab host's CPU model and kernel command line for needs.
// loglevel=5 instead of quiet: warnings and the traces of a lockup or an
// oops reach the console, where they tell whose trouble it is. The CPU
// offers 1 GiB pages (pdpe1gb) only to packages that need them: L2 Linux
// guests then map their memory with 1 GiB pages, which the nested TCG lab
// is not known to handle well.
func hostShape(needs []Need) (cpu, appendLine string) {
	cpu = "EPYC,+svm"
	appendLine = strings.Replace(lab.DefaultAppend, " quiet ", " ", 1) + " loglevel=5"
	if slices.Contains(needs, HugePages1G) {
		cpu += ",+pdpe1gb"
		appendLine += " hugepagesz=1G hugepages=1"
	}
	if slices.Contains(needs, DeviceDax) {
		appendLine = strings.Replace(appendLine, "memmap=256M!4G", daxMemmap, 1)
	}
	return cpu, appendLine
}

type labResult struct {
	code int
	note string
}

// runInLab runs this test binary, with its flags, inside a lab host, once
// more if the lab host's own kernel was in trouble (lab.HostTroubleOf).
func runInLab(pkg string, needs []Need) labResult {
	failed := func(format string, a ...any) labResult {
		msg := fmt.Sprintf(format, a...)
		fmt.Printf("labrun: %s: the tests did NOT run: %s\n", pkg, msg)
		return labResult{code: 1, note: "did not run: " + firstLine(msg)}
	}
	exe, err := os.Executable()
	if err != nil {
		return failed("cannot find this test binary: %v", err)
	}
	l, err := lab.New(func(f string, a ...any) { fmt.Printf(f+"\n", a...) })
	if err != nil {
		return failed("%v", err)
	}
	inner, outer := deadlines(os.Args[1:])
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	args, dropped := forwardArgs(os.Args[1:])
	args = append(args, "-test.timeout="+inner.String())
	if len(dropped) > 0 {
		fmt.Printf("labrun: %s: not passed into the lab host (they name files of this machine): %s\n", pkg, strings.Join(dropped, " "))
	}
	k, err := l.Kernel(lab.Kernel61)
	if err != nil {
		return failed("the lab kernel: %v", err)
	}
	pmvm, err := l.BuildPmvm()
	if err != nil {
		return failed("a static pmvm for the lab host: %v", err)
	}
	var guest *lab.GuestImage
	if slices.Contains(needs, LinuxGuest) {
		if guest, err = l.Guest(k, lab.GuestSpec{Name: "labrun-guest", Agent: true, Init: guestInit}); err != nil {
			return failed("the Linux guest image: %v", err)
		}
	}
	dax := slices.Contains(needs, DeviceDax)
	h, err := l.Host(lab.HostSpec{
		Name:     "labrun-" + strings.ReplaceAll(pkg, "/", "-"),
		Kernel:   k,
		Modules:  append(append([]string(nil), lab.DefaultHostModules...), scratchModules...),
		Scenario: scenario(pkg, path.Join(labBinDir, filepath.Base(exe)), nonce, args, guest != nil, dax),
		Guest:    guest,
		Dax:      dax,
		Extra: func(im *lab.Image) error {
			if err := l.AddHostBinary(im, exe, path.Join(labBinDir, filepath.Base(exe))); err != nil {
				return err
			}
			im.HostFile(strings.TrimPrefix(labKernel, "/"), k.BzImage, 0o644)
			im.HostFile(strings.TrimPrefix(labPmvm, "/"), pmvm, 0o755)
			if slices.Contains(needs, QEMU) {
				if err := addQEMU(l, im); err != nil {
					return err
				}
			}
			return addSources(im, l.Repo)
		},
	})
	if err != nil {
		return failed("the lab host image: %v", err)
	}
	// One lab host of labrun's at a time: go test runs packages in
	// parallel, and two TCG lab hosts on two cores starve each other.
	unlock, err := lockLabHost(l.Cache, pkg)
	if err != nil {
		return failed("%v", err)
	}
	defer unlock()
	scratch := filepath.Join(l.Cache, "labrun", strings.ReplaceAll(pkg, "/", "-")+".scratch.img")
	defer os.Remove(scratch)
	var first labResult
	for attempt := 1; ; attempt++ {
		if err := makeScratch(scratch); err != nil {
			return failed("%v", err)
		}
		res, trouble := bootAndRun(l, h, pkg, scratch, nonce, outer, needs)
		if res.code == 0 || len(trouble) == 0 || attempt == 2 {
			if attempt == 2 {
				Append(Record{Kind: KindRetry, Name: pkg + " (whole package in the lab)", Where: WhereLab, Code: res.code, Note: first.note})
				res.note = strings.TrimPrefix(res.note+"; ", "; ") + "second attempt after lab host trouble: " + first.note
			}
			if len(trouble) > 0 {
				fmt.Printf("labrun: %s: the lab host's own kernel was in trouble:\n\t%s\n", pkg, strings.Join(trouble, "\n\t"))
			}
			return res
		}
		first = labResult{code: res.code, note: fmt.Sprintf("exit %d with lab host trouble: %s", res.code, trouble[0])}
		fmt.Printf("labrun: %s: attempt %d failed (exit %d) while the lab host's own kernel was in trouble, which a test process in it cannot cause:\n\t%s\nrunning the package once more in a new lab host\n",
			pkg, attempt, res.code, strings.Join(trouble, "\n\t"))
	}
}

// bootAndRun boots the lab host once and relays the tests' output. trouble
// is the lab host's own distress (only when the run failed).
func bootAndRun(l *lab.Lab, h *lab.HostImage, pkg, scratch, nonce string, timeout time.Duration, needs []Need) (labResult, []string) {
	beginRE := regexp.MustCompile(`^PMVM-LABRUN begin ` + nonce + `\b(.*)`)
	exitRE := regexp.MustCompile(`^PMVM-LABRUN exit ` + nonce + ` (\d+)`)
	dmesgRE := regexp.MustCompile(`^PMVM-LABRUN dmesg: (.*)`)
	endRE := regexp.MustCompile(`^PMVM-LABRUN dmesg-end ` + nonce)

	var mu sync.Mutex
	relaying := false
	var warnings []string
	t0 := time.Now()
	q := lab.LabHost(h)
	q.Name = "labrun-" + strings.ReplaceAll(pkg, "/", "-")
	q.CPU, q.Append = hostShape(needs)
	q.MemoryMiB = labHostMiB
	q.Extra = append(q.Extra, "-drive", "file="+scratch+",if=virtio,format=raw,cache=unsafe")
	q.Timeout = timeout
	// Calls are serialized by lab.VM.
	q.Echo = func(line string) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case beginRE.MatchString(line):
			relaying = true
			fmt.Printf("labrun: %s: lab host up in %v%s; the tests' output follows\n", pkg, time.Since(t0).Round(time.Millisecond), beginRE.FindStringSubmatch(line)[1])
		case exitRE.MatchString(line):
			relaying = false
		case dmesgRE.MatchString(line):
			warnings = append(warnings, dmesgRE.FindStringSubmatch(line)[1])
		case relaying:
			fmt.Println(line)
		}
	}
	vm, err := l.Start(q)
	if err != nil {
		return labResult{code: 1, note: "did not run: " + firstLine(err.Error())}, nil
	}
	defer vm.Kill()
	if _, err := vm.WaitFor(beginRE, bootAllowance); err != nil {
		vm.Kill()
		fmt.Printf("labrun: %s: the lab host did not get to the tests: %v\n", pkg, err)
		// Nothing of the tests ran yet: whatever stopped the boot is the lab's.
		return labResult{code: 1, note: "did not run: the lab host did not boot: " + firstLine(err.Error())},
			append(lab.HostTroubleOf(vm), "(the lab host never got to the tests: "+firstLine(err.Error())+")")
	}
	m, err := vm.WaitFor(exitRE, timeout)
	if err != nil {
		vm.Kill()
		fmt.Printf("labrun: %s: the lab host never reported the tests' exit status: %v\n", pkg, err)
		return labResult{code: 1, note: "no exit status from the lab host: " + firstLine(err.Error())}, lab.HostTroubleOf(vm)
	}
	code, _ := strconv.Atoi(m[1])
	if _, err := vm.WaitFor(endRE, 2*time.Minute); err != nil {
		fmt.Printf("labrun: %s: the lab host's kernel log was not read after the tests: %v\n", pkg, err)
		return labResult{code: 1, note: "no kernel log after the tests"}, lab.HostTroubleOf(vm)
	}
	if err := vm.Wait(time.Minute); err != nil {
		fmt.Printf("labrun: %s: the lab host did not power off cleanly: %v\n", pkg, err)
	}
	res := labResult{code: code}
	mu.Lock()
	defer mu.Unlock()
	if len(warnings) > 0 {
		// A kernel WARNING while pmvm's tests drive KVM may be pmvm's
		// doing: it fails the package.
		fmt.Printf("labrun: %s: FAIL: the lab host's kernel logged warnings while the tests ran:\n\t%s\n", pkg, strings.Join(warnings, "\n\t"))
		res = labResult{code: 1, note: "lab host kernel warning: " + warnings[0]}
	}
	var trouble []string
	if res.code != 0 {
		trouble = lab.HostTroubleOf(vm)
	}
	return res, trouble
}

// scenario is the lab host's /lab/scenario.sh (scripts/run-tests.sh):
// the facilities the needs name, then the test binary bin with args in
// its package's directory, its exit status and the kernel's warnings
// marked with nonce.
func scenario(pkg, bin, nonce string, args []string, guest, dax bool) string {
	vars := map[string]string{
		"TEST_BIN":     bin,
		"PKG_DIR":      path.Join(labSrc, pkg),
		"NONCE":        nonce,
		"SCRATCH":      labScratch,
		"LAB_KERNEL":   labKernel,
		"LAB_PMVM":     labPmvm,
		"GUEST_KERNEL": "",
		"GUEST_INITRD": "",
		"DAX_DEV":      "",
	}
	if guest {
		vars["GUEST_KERNEL"], vars["GUEST_INITRD"] = lab.LabGuestKernel, lab.LabGuestInitrd
	}
	if dax {
		vars["DAX_DEV"] = labDax
	}
	return lab.ShellVars(vars) + lab.ShellArgs(args) + script("run-tests.sh")
}

// forwardArgs keeps the test flags that mean the same inside the lab host
// and drops those naming files of this machine (-test.testlogfile,
// profiles, coverage directories).
func forwardArgs(args []string) (keep, dropped []string) {
	valued := map[string]bool{"run": true, "skip": true, "count": true, "bench": true,
		"benchtime": true, "cpu": true, "parallel": true, "shuffle": true, "list": true}
	boolean := map[string]bool{"v": true, "short": true, "benchmem": true, "failfast": true, "paniconexit0": true, "fullpath": true}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name := strings.TrimLeft(a, "-")
		name, _, hasValue := strings.Cut(name, "=")
		name = strings.TrimPrefix(name, "test.")
		switch {
		case name == "timeout": // runInLab sets the inner one
			if !hasValue && i+1 < len(args) {
				i++
			}
		case boolean[name]:
			keep = append(keep, a)
		case valued[name]:
			keep = append(keep, a)
			if !hasValue && i+1 < len(args) {
				i++
				keep = append(keep, args[i])
			}
		default:
			dropped = append(dropped, a)
		}
	}
	return keep, dropped
}

// deadlines splits the tests' own -test.timeout (go test's default 10m;
// 0 means none: an hour) between the lab host and the test binary in it.
// go test kills this binary a minute after that timeout, and this binary
// runs no alarm of its own (it never calls m.Run), so the lab host must be
// done before: the tests inside get the timeout less bootAllowance, the
// lab host the timeout less 30 s.
func deadlines(args []string) (inner, outer time.Duration) {
	d := 10 * time.Minute
	for i, a := range args {
		name, v, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "test.timeout" && name != "timeout" {
			continue
		}
		if !ok && i+1 < len(args) {
			v = args[i+1]
		}
		if p, err := time.ParseDuration(v); err == nil {
			d = p
		}
	}
	if d == 0 {
		d = time.Hour
	}
	if d < 2*bootAllowance {
		d = 2 * bootAllowance
	}
	return d - bootAllowance, d - 30*time.Second
}

// bootAllowance is how long the lab host may take to boot and power off.
const bootAllowance = 2 * time.Minute

// addSources puts the repository's files (not .git, caches or binaries)
// under /src, so tests find their testdata and ../../configs as here.
func addSources(im *lab.Image, repo string) error {
	return filepath.WalkDir(repo, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repo, p)
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".cache", "bin", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil || info.Size() > 8<<20 {
			return err
		}
		im.HostFile(path.Join(strings.TrimPrefix(labSrc, "/"), filepath.ToSlash(rel)), p, info.Mode().Perm())
		return nil
	})
}

// addQEMU puts this machine's qemu-system-x86_64, its libraries and its
// firmware into the lab host image at the same paths.
func addQEMU(l *lab.Lab, im *lab.Image) error {
	bin, err := exec.LookPath(qemuBinary)
	if err != nil {
		return fmt.Errorf("%s not found: install Debian's qemu-system-x86 (make deps)", qemuBinary)
	}
	if err := l.AddHostBinary(im, bin, "/usr/bin/"+qemuBinary); err != nil {
		return err
	}
	for _, dir := range qemuDataDirs {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil // a dangling firmware link: QEMU would not find it here either
			}
			im.HostFile(strings.TrimPrefix(p, "/"), real, 0o644)
			return nil
		})
		if err != nil {
			return fmt.Errorf("QEMU firmware %s: %w", dir, err)
		}
	}
	return nil
}

// makeScratch makes a fresh sparse ext4 image for the lab host's TMPDIR.
func makeScratch(p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	os.Remove(p)
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	err = f.Truncate(scratchBytes)
	f.Close()
	if err != nil {
		return err
	}
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "labrun", p).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %v\n%s(the lab's scratch disk needs e2fsprogs: apt-get install e2fsprogs)", p, err, out)
	}
	return nil
}

// lockLabHost waits until no other package's lab host runs on this machine.
func lockLabHost(cache, pkg string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(cache, "labrun.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("labrun lock: %w", err)
	}
	if err := flock.TryExclusive(f); err != nil {
		fmt.Printf("labrun: %s: waiting for another package's lab host to finish\n", pkg)
		if err := flock.Exclusive(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("labrun lock: %w", err)
		}
	}
	return func() { f.Close() }, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
