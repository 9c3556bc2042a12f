// Package cycle measures the whole reboot-mode cycle as a real Linux guest
// sees it, pmvm beside QEMU 7.2's nearest equivalent, on the same guest
// image, the same RAM sizes and the same device-dax backing, in one run:
//
//   - BenchmarkCycle: `pmvm save` (suspend through qemu-guest-agent, ACPI
//     S3, state file, pmvm exits), a new `pmvm run --incoming` (wake at the
//     FACS vector, guest clock set), until the guest's agent answers again.
//   - BenchmarkQEMUCycle: stop, migrate with x-ignore-shared to a durable
//     state file, quit, a new QEMU with -incoming, migrate-incoming, cont,
//     until the guest's agent answers again.
//
// down-ms is the part until the old process has exited, up-ms the rest.
// A stock Linux guest needs a KVM that boots one: these run in a lab host
// (qa/labrun) unless $PMVM_TEST_GUEST_KERNEL/INITRD and $PMVM_TEST_DAX
// name a guest and a device-dax instance the benchmarks may overwrite.
package cycle

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/pmvm/pmvm/qa/bench"
	"github.com/pmvm/pmvm/qa/lab"
	"github.com/pmvm/pmvm/qa/labrun"
)

func TestMain(m *testing.M) {
	labrun.Main(m, labrun.KVM, labrun.QEMU, labrun.DeviceDax, labrun.LinuxGuest)
}

// sizes are the guest RAM sizes; both fit the lab's 2 GiB device-dax.
var sizes = []struct {
	name  string
	bytes uint64
}{{"256MiB", 256 << 20}, {"1GiB", 1 << 30}}

const (
	guestVCPUs   = 2
	guestCmdline = "console=ttyS0 panic=-1 quiet"
	bootTimeout  = 3 * time.Minute // a Linux boot to its agent, nested
	cycleTimeout = 2 * time.Minute
)

// parts of the guest and host the benchmarks use.
type parts struct{ dax, kernel, initrd, pmvm string }

func need(b *testing.B) parts {
	b.Helper()
	for _, n := range []labrun.Need{labrun.KVM, labrun.QEMU, labrun.DeviceDax, labrun.LinuxGuest} {
		if why := n.Missing(); why != "" {
			b.Fatalf("cannot run: %s", why)
		}
	}
	p := parts{dax: os.Getenv(labrun.DaxEnv), kernel: os.Getenv(labrun.GuestKernelEnv), initrd: os.Getenv(labrun.GuestInitrdEnv)}
	var err error
	if p.pmvm, err = bench.BuildPMVM(b.TempDir()); err != nil {
		b.Fatal(err)
	}
	return p
}

// shortDir is a directory without ',' or '=' (QEMU's option syntax) in
// its name, unlike b.TempDir()'s "ram=256MiB".
func shortDir(b *testing.B) string {
	d, err := os.MkdirTemp("", "cycle-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Each RAM size's guest boots once, in the parent benchmark, and the
// sub-benchmark (which the framework runs more than once: b.N = 1, then
// the -benchtime count) only cycles it: boots are what strain the nested
// lab, and they are not measured.

func BenchmarkCycle(b *testing.B) {
	p := need(b)
	for _, sz := range sizes {
		dir := shortDir(b)
		agent, ctl := filepath.Join(dir, "agent.sock"), filepath.Join(dir, "control.sock")
		cfg := filepath.Join(dir, "cycle.toml")
		vm := lab.VMConfig{Name: "cycle", Mode: "reboot", VCPUs: guestVCPUs, Kernel: p.kernel, Initrd: p.initrd,
			Cmdline: guestCmdline, Console: "stdout", Agent: agent, Control: ctl,
			Memory: []lab.MemoryBlock{{Name: "ram0", Size: sz.name, Backing: p.dax, Shared: true}}}
		if err := os.WriteFile(cfg, vm.TOML(), 0o644); err != nil {
			b.Fatal(err)
		}
		progress(b, "booting the guest under pmvm, ram=%s", sz.name)
		run := startPMVM(b, p.pmvm, dir, "run", cfg)
		if err := waitAgent(agent, bootTimeout); err != nil {
			run.stop(b)
			b.Fatalf("the guest booted by pmvm: %v\n%s", err, run.tail())
		}
		cycles := 0
		b.Run("ram="+sz.name, func(b *testing.B) {
			b.StopTimer()
			var t times
			for i := 0; i < b.N; i++ {
				state := filepath.Join(dir, fmt.Sprintf("cycle-%d.state", cycles))
				cycles++
				t0 := time.Now()
				if out, err := exec.Command(p.pmvm, "save", "cycle", "--control", ctl, "--state", state).CombinedOutput(); err != nil {
					b.Fatalf("pmvm save: %v\n%s\n%s", err, out, run.tail())
				}
				if err := run.wait(cycleTimeout); err != nil {
					b.Fatalf("the saved pmvm: %v\n%s", err, run.tail())
				}
				down := time.Now()
				run = startPMVM(b, p.pmvm, dir, "run", cfg, "--incoming", state)
				if err := waitAgent(agent, cycleTimeout); err != nil {
					b.Fatalf("after the resume: %v\n%s", err, run.tail())
				}
				t.add(t0, down, time.Now())
			}
			t.report(b)
		})
		run.stop(b)
	}
}

func BenchmarkQEMUCycle(b *testing.B) {
	p := need(b)
	for _, sz := range sizes {
		dir := shortDir(b)
		agent := filepath.Join(dir, "agent.sock")
		spec := bench.QEMUSpec{Backing: p.dax, Size: sz.bytes, IgnoreShared: true, Align: "2M",
			Kernel: p.kernel, Initrd: p.initrd, Append: guestCmdline, VCPUs: guestVCPUs, CPU: "host",
			Console: filepath.Join(dir, "console.log"), AgentSocket: agent}
		progress(b, "booting the guest under QEMU, ram=%s", sz.name)
		q, err := bench.StartQEMU(spec, false)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := q.QMP.Execute("cont", nil, time.Minute); err != nil {
			q.Kill()
			b.Fatal(err)
		}
		if err := waitAgent(agent, bootTimeout); err != nil {
			q.Kill()
			b.Fatalf("the guest booted by QEMU: %v\n%s", err, fileTail(spec.Console))
		}
		cycles := 0
		b.Run("ram="+sz.name, func(b *testing.B) {
			b.StopTimer()
			var t times
			for i := 0; i < b.N; i++ {
				state := filepath.Join(dir, fmt.Sprintf("cycle-%d.state", cycles))
				cycles++
				t0 := time.Now()
				if _, err := q.QMP.Execute("stop", nil, time.Minute); err != nil {
					b.Fatal(err)
				}
				if _, err := q.Save(state); err != nil {
					b.Fatal(err)
				}
				if err := q.Quit(); err != nil {
					b.Fatal(err)
				}
				down := time.Now()
				if q, _, err = bench.LoadQEMU(spec, state); err != nil {
					b.Fatal(err)
				}
				if err := waitAgent(agent, cycleTimeout); err != nil {
					b.Fatalf("after the resume: %v\n%s", err, fileTail(spec.Console))
				}
				t.add(t0, down, time.Now())
			}
			t.report(b)
		})
		if q != nil {
			q.Kill()
		}
	}
}

// progress prints a boot as it happens (b.Log would hold it until the
// benchmark ends), so a boot that hangs in the lab shows. Never inside a
// sub-benchmark: its result line is printed around its run, and a line
// in between would break it for the report.
func progress(b *testing.B, format string, a ...any) {
	fmt.Printf("cycle: %s %s: %s\n", time.Now().Format("15:04:05.000"), b.Name(), fmt.Sprintf(format, a...))
}

// waitAgent waits until the qemu-guest-agent behind the unix socket sock
// answers guest-sync-delimited, dialling again after every miss (the
// socket belongs to a VMM process that may not exist yet).
func waitAgent(sock string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := fmt.Errorf("nothing tried")
	for time.Now().Before(deadline) {
		a, err := lab.DialAgent(sock, 0)
		if err != nil {
			last = err
			time.Sleep(20 * time.Millisecond)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		err = a.Sync(ctx)
		cancel()
		a.Close()
		if err == nil {
			return nil
		}
		last = err
	}
	return fmt.Errorf("the guest agent on %s did not answer within %v: %w", sock, timeout, last)
}

// pmvmProcess is one `pmvm run`, its output in a file.
type pmvmProcess struct {
	cmd  *exec.Cmd
	log  string
	done chan error
}

func startPMVM(b *testing.B, bin, dir string, args ...string) *pmvmProcess {
	b.Helper()
	log := filepath.Join(dir, fmt.Sprintf("pmvm-%d.log", time.Now().UnixNano()))
	f, err := os.Create(log)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	p := &pmvmProcess{cmd: exec.Command(bin, args...), log: log, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		b.Fatalf("start pmvm %v: %v", args, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p
}

// wait waits for pmvm to exit with status 0 (a save ends it so).
func (p *pmvmProcess) wait(timeout time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(timeout):
		return fmt.Errorf("pmvm did not exit within %v", timeout)
	}
}

func (p *pmvmProcess) stop(b *testing.B) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(30 * time.Second); err != nil {
		p.cmd.Process.Kill()
	}
}

func (p *pmvmProcess) tail() string { return fileTail(p.log) }

func fileTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// times collects each cycle and its parts.
type times struct{ whole, down, up []time.Duration }

func (t *times) add(start, down, up time.Time) {
	t.whole = append(t.whole, up.Sub(start))
	t.down = append(t.down, down.Sub(start))
	t.up = append(t.up, up.Sub(down))
}

// report reports the whole cycle as ns/op and ms/op (means) and p50-ms,
// and its parts as down-/up- ms/op and p50-ms, as qa/bench does.
func (t *times) report(b *testing.B) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	mean := func(ds []time.Duration) time.Duration {
		var s time.Duration
		for _, d := range ds {
			s += d
		}
		return s / time.Duration(len(ds))
	}
	p50 := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	if len(t.whole) == 0 {
		return
	}
	b.ReportMetric(float64(mean(t.whole)), "ns/op")
	b.ReportMetric(ms(mean(t.whole)), "ms/op")
	b.ReportMetric(ms(p50(t.whole)), "p50-ms")
	b.ReportMetric(ms(mean(t.down)), "down-ms/op")
	b.ReportMetric(ms(p50(t.down)), "down-p50-ms")
	b.ReportMetric(ms(mean(t.up)), "up-ms/op")
	b.ReportMetric(ms(p50(t.up)), "up-p50-ms")
}
