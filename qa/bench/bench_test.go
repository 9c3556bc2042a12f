package bench

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmvm/pmvm/configs"
)

// These benchmarks run only with -bench (make bench). Each size gets its
// own /dev/shm backing, created once by the parent benchmark and removed
// as soon as that size's sub-benchmark has returned. The state files go to b.TempDir() (os.TempDir(): a disk,
// as a state file that must outlive a kexec would). See doc.go for what
// each timed region is. Run them with -benchtime Nx: the untimed setup of
// an iteration (booting or starting a guest) is much longer than the
// timed part.

// ramSize is a guest RAM size and its name in benchmark names (ram=NAME).
type ramSize struct {
	name  string
	bytes uint64
}

// ramSizes are the guest RAM sizes every benchmark runs at.
var ramSizes = []ramSize{
	{"256MiB", 256 << 20},
	{"1GiB", 1 << 30},
	{"4GiB", 4 << 30},
}

// needPMVM fails (never skips) the benchmark when this host cannot run it.
func needPMVM(b *testing.B) {
	b.Helper()
	if err := CheckKVM(); err != nil {
		b.Fatal(err)
	}
	if err := CheckShm(); err != nil {
		b.Fatal(err)
	}
}

func needQEMU(b *testing.B) {
	b.Helper()
	needPMVM(b) // the peer runs on the same /dev/kvm and /dev/shm
	if err := CheckQEMU(); err != nil {
		b.Fatal(err)
	}
}

// backing creates a /dev/shm backing of size bytes for b's sub-benchmarks
// and removes it when b ends (callers remove it sooner, once the size's
// sub-benchmark has returned, to keep at most one touched backing around).
func backing(b *testing.B, name string, size uint64, touched bool) string {
	b.Helper()
	sweepStaleBackings()
	path := ShmPath(name)
	if err := CreateBacking(path, size, touched); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.Remove(path) })
	return path
}

// sweepStaleBackings removes backings left by benchmark processes that no
// longer exist (killed by a timeout before their cleanup ran).
func sweepStaleBackings() {
	paths, _ := filepath.Glob("/dev/shm/pmvm-bench-*")
	for _, p := range paths {
		rest := strings.TrimPrefix(filepath.Base(p), "pmvm-bench-")
		pid, err := strconv.Atoi(rest[:max(strings.IndexByte(rest, '-'), 0)])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.Remove(p)
		}
	}
}

// tinyGuest writes the suspending kernel into dir and returns its path.
func tinyGuest(b *testing.B, dir string) string {
	b.Helper()
	img, err := SuspendingKernel()
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

func pmvmConfig(b *testing.B, dir, kernel, backing string, size uint64) *configs.VM {
	b.Helper()
	cfg, err := PMVMConfig(dir, kernel, backing, size)
	if err != nil {
		b.Fatal(err)
	}
	return cfg
}

// timings collects every iteration's duration of the timed region ("")
// and of its parts ("check", "new", ...).
type timings map[string][]time.Duration

func (t timings) add(part string, d time.Duration) { t[part] = append(t[part], d) }

// report reports each part's mean as <part>-ms/op and its median
// iteration as <part>-p50-ms, and the whole timed region as ms/op,
// p50-ms and ns/op (its mean, replacing the framework's own). The median
// is there because an fsync stall or an RCU grace period now and then
// makes a mean jumpy on this host.
func (t timings) report(b *testing.B) {
	b.Helper()
	for part, ds := range t {
		if len(ds) == 0 {
			continue
		}
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		mean := float64(sum.Nanoseconds()) / float64(len(ds))
		sorted := slices.Clone(ds)
		slices.Sort(sorted)
		p50 := sorted[len(sorted)/2]
		if len(sorted)%2 == 0 {
			p50 = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
		}
		prefix := ""
		if part != "" {
			prefix = part + "-"
		} else {
			b.ReportMetric(mean, "ns/op")
		}
		b.ReportMetric(mean/1e6, prefix+"ms/op")
		b.ReportMetric(float64(p50.Nanoseconds())/1e6, prefix+"p50-ms")
	}
}

// reportFiles reports the state file's size and how much of the backing
// is resident.
func reportFiles(b *testing.B, statePath, backingPath string) {
	b.Helper()
	st, err := os.Stat(statePath)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.Size()), "state-bytes")
	res, err := ResidentBytes(backingPath)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(res)/(1<<20), "resident-MiB")
}

// BenchmarkSave times pmvm's save of a guest already in S3: from
// Machine.SaveState until the state file is durable. Each iteration boots
// the tiny guest to S3 first and stops it after (untimed).
func BenchmarkSave(b *testing.B) { benchSave(b, "save", false) }

// BenchmarkQEMUSave times QEMU's save of a paused VM to a file with
// x-ignore-shared: from getfd + migrate fd: until completed and durable.
func BenchmarkQEMUSave(b *testing.B) { benchQEMUSave(b, "qsave", false, true, ramSizes) }

// BenchmarkResume times pmvm's resume: from CheckIncoming to the guest's
// first port write at its waking vector, in a new Machine each time.
func BenchmarkResume(b *testing.B) { benchResume(b, "resume", false) }

// BenchmarkResumeProcess is BenchmarkResume through the real binary, a new
// `pmvm run CONFIG --incoming STATE` process each time, timed from exec to
// the guest's first byte on pmvm's stdout: it adds what BenchmarkResume
// leaves out (exec, Go runtime start, config, sockets) and is the number to
// hold against QEMU's resume, which starts a process too.
func BenchmarkResumeProcess(b *testing.B) { benchResumeProcess(b, "resume-process", false) }

// BenchmarkQEMUResume times QEMU's resume: from exec to running after the
// incoming migration (load-ms/op: from migrate-incoming on).
func BenchmarkQEMUResume(b *testing.B) { benchQEMUResume(b, "qresume", false, true, ramSizes) }

// BenchmarkSaveTouched is BenchmarkSave with every page of RAM resident.
func BenchmarkSaveTouched(b *testing.B) { benchSave(b, "save-touched", true) }

// BenchmarkQEMUSaveTouched is BenchmarkQEMUSave with every page resident.
func BenchmarkQEMUSaveTouched(b *testing.B) {
	benchQEMUSave(b, "qsave-touched", true, true, ramSizes)
}

// BenchmarkResumeTouched is BenchmarkResume with every page resident.
func BenchmarkResumeTouched(b *testing.B) { benchResume(b, "resume-touched", true) }

// BenchmarkResumeProcessTouched is BenchmarkResumeProcess with every page resident.
func BenchmarkResumeProcessTouched(b *testing.B) {
	benchResumeProcess(b, "resume-process-touched", true)
}

// BenchmarkQEMUResumeTouched is BenchmarkQEMUResume with every page resident.
func BenchmarkQEMUResumeTouched(b *testing.B) {
	benchQEMUResume(b, "qresume-touched", true, true, ramSizes)
}

// BenchmarkQEMUSaveCopyRAM is QEMU's save without x-ignore-shared, of a
// guest whose 256 MiB are all touched: the RAM copy pmvm never makes.
func BenchmarkQEMUSaveCopyRAM(b *testing.B) {
	benchQEMUSave(b, "qsave-copy", true, false, ramSizes[:1])
}

// BenchmarkQEMUResumeCopyRAM loads that copy back.
func BenchmarkQEMUResumeCopyRAM(b *testing.B) {
	benchQEMUResume(b, "qresume-copy", true, false, ramSizes[:1])
}

func benchSave(b *testing.B, name string, touched bool) {
	needPMVM(b)
	kernel := tinyGuest(b, b.TempDir())
	for _, sz := range ramSizes {
		mem := backing(b, name+"-"+sz.name, sz.bytes, touched)
		b.Run("ram="+sz.name, func(b *testing.B) {
			dir := b.TempDir()
			cfg := pmvmConfig(b, dir, kernel, mem, sz.bytes)
			state := filepath.Join(dir, "bench.state")
			t := timings{}
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				g, err := BootToS3(cfg)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				d, err := g.Save(state)
				b.StopTimer()
				if err != nil {
					g.Close()
					b.Fatal(err)
				}
				t.add("", d)
				if err := g.Finish(); err != nil {
					b.Fatal(err)
				}
			}
			t.report(b)
			reportFiles(b, state, mem)
		})
		os.Remove(mem)
	}
}

func benchResume(b *testing.B, name string, touched bool) {
	needPMVM(b)
	kernel := tinyGuest(b, b.TempDir())
	for _, sz := range ramSizes {
		mem := backing(b, name+"-"+sz.name, sz.bytes, touched)
		b.Run("ram="+sz.name, func(b *testing.B) {
			dir := b.TempDir()
			cfg := pmvmConfig(b, dir, kernel, mem, sz.bytes)
			state := filepath.Join(dir, "bench.state")
			b.StopTimer()
			if err := SaveOnce(cfg, state); err != nil {
				b.Fatal(err)
			}
			// Every iteration resumes the same state file into a new
			// machine: the resume code leaves RAM as it found it.
			t := timings{}
			for i := 0; i < b.N; i++ {
				b.StartTimer()
				r, err := Resume(cfg, state)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				t.add("", r.Total())
				t.add("check", r.Check)
				t.add("new", r.New)
				t.add("restore", r.Restore)
				t.add("wake", r.Wake)
				t.add("load", r.Check+r.Restore+r.Wake)
			}
			t.report(b)
			reportFiles(b, state, mem)
		})
		os.Remove(mem)
	}
}

func benchResumeProcess(b *testing.B, name string, touched bool) {
	needPMVM(b)
	dir := b.TempDir()
	bin, err := BuildPMVM(dir)
	if err != nil {
		b.Fatal(err)
	}
	kernel := tinyGuest(b, dir)
	for _, sz := range ramSizes {
		mem := backing(b, name+"-"+sz.name, sz.bytes, touched)
		b.Run("ram="+sz.name, func(b *testing.B) {
			dir := b.TempDir()
			cfgPath := filepath.Join(dir, "vm.toml")
			if err := os.WriteFile(cfgPath, []byte(PMVMConfigText(dir, kernel, mem, sz.bytes)), 0o644); err != nil {
				b.Fatal(err)
			}
			cfg := pmvmConfig(b, dir, kernel, mem, sz.bytes)
			state := filepath.Join(dir, "bench.state")
			b.StopTimer()
			if err := SaveOnce(cfg, state); err != nil {
				b.Fatal(err)
			}
			t := timings{}
			for i := 0; i < b.N; i++ {
				b.StartTimer()
				d, err := ResumeProcess(bin, cfgPath, state)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if err := PutBackResumed(state); err != nil {
					b.Fatal(err)
				}
				t.add("", d)
			}
			t.report(b)
			reportFiles(b, state, mem)
		})
		os.Remove(mem)
	}
}

func benchQEMUSave(b *testing.B, name string, touched, ignoreShared bool, sizes []ramSize) {
	needQEMU(b)
	for _, sz := range sizes {
		mem := backing(b, name+"-"+sz.name, sz.bytes, touched)
		b.Run("ram="+sz.name, func(b *testing.B) {
			dir := b.TempDir()
			spec := QEMUSpec{Backing: mem, Size: sz.bytes, IgnoreShared: ignoreShared}
			state := filepath.Join(dir, "qemu.state")
			t := timings{}
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				q, err := StartQEMU(spec, false)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				st, err := q.Save(state)
				b.StopTimer()
				if err != nil {
					q.Kill()
					b.Fatal(err)
				}
				t.add("", st.Total)
				t.add("migrate", st.Migrate)
				if err := q.Quit(); err != nil {
					b.Fatal(err)
				}
			}
			t.report(b)
			reportFiles(b, state, mem)
		})
		os.Remove(mem)
	}
}

func benchQEMUResume(b *testing.B, name string, touched, ignoreShared bool, sizes []ramSize) {
	needQEMU(b)
	for _, sz := range sizes {
		mem := backing(b, name+"-"+sz.name, sz.bytes, touched)
		b.Run("ram="+sz.name, func(b *testing.B) {
			dir := b.TempDir()
			spec := QEMUSpec{Backing: mem, Size: sz.bytes, IgnoreShared: ignoreShared}
			state := filepath.Join(dir, "qemu.state")
			b.StopTimer()
			q, err := StartQEMU(spec, false)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := q.Save(state); err != nil {
				q.Kill()
				b.Fatal(err)
			}
			if err := q.Quit(); err != nil {
				b.Fatal(err)
			}
			t := timings{}
			for i := 0; i < b.N; i++ {
				b.StartTimer()
				r, err := ResumeQEMU(spec, state)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				t.add("", r.Total())
				t.add("start", r.Start)
				t.add("load", r.Load)
			}
			t.report(b)
			reportFiles(b, state, mem)
		})
		os.Remove(mem)
	}
}
