package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// QEMUPackage is the Debian package providing qemu-system-x86_64.
const QEMUPackage = "qemu-system-x86"

// DefaultAppend is the lab host's kernel command line (README.md, "How the lab works"): memmap=256M!4G
// reserves emulated persistent memory in RAM that exists above 4 GiB.
const DefaultAppend = "console=ttyS0 panic=-1 quiet memmap=256M!4G"

// QEMU describes one QEMU run.
type QEMU struct {
	Name      string        // used in log file names and echoed lines
	Binary    string        // default qemu-system-x86_64
	Accel     string        // default tcg
	CPU       string        // e.g. "EPYC,+svm"; "" leaves QEMU's default
	Machine   string        // default q35
	MemoryMiB int           // default 3072
	SMP       int           // default 2
	Kernel    string        // -kernel
	Initrd    string        // -initrd
	Append    string        // -append
	Extra     []string      // more arguments
	Timeout   time.Duration // overall deadline; QEMU is killed after it (default 5 min)
	// Echo receives every console line as it arrives (t.Log, fmt.Println);
	// calls are serialized. QEMU's stderr lines are prefixed "qemu stderr: ".
	Echo func(line string)
	// LogDir gets a console log <Name>-<time>.log ("" = <cache>/lab/logs; "-" = none).
	LogDir string
	// FailOn: a console line matching it makes pending and later WaitFor
	// calls fail at once (default DefaultFailOn).
	FailOn *regexp.Regexp
}

// DefaultFailOn catches lab and guest errors ("PMVM-LAB ERROR: ...",
// "PMVM-GUEST ERROR: ...") and kernel panics.
var DefaultFailOn = regexp.MustCompile(`PMVM-LAB ERROR|PMVM-GUEST ERROR|Kernel panic|end Kernel panic`)

// LabHost returns the QEMU run of a lab host image (README.md, "How the lab works"): TCG with
// an EPYC CPU exposing SVM, q35, 3 GiB, 2 CPUs, PVH boot of the vmlinux.
func LabHost(h *HostImage) QEMU {
	return QEMU{
		Name:      "l1",
		CPU:       "EPYC,+svm",
		MemoryMiB: 3072,
		SMP:       2,
		Kernel:    h.Vmlinux,
		Initrd:    h.Initrd,
		Append:    DefaultAppend,
	}
}

// DirectGuest returns a plain TCG run of a guest image (no pmvm), used to
// prove the guest image is good on its own.
func DirectGuest(g *GuestImage) QEMU {
	return QEMU{
		Name:      "l2-direct",
		MemoryMiB: 512,
		SMP:       2,
		Kernel:    g.BzImage,
		Initrd:    g.Initrd,
		Append:    "console=ttyS0 panic=-1",
	}
}

// Args returns the full command line (without the binary).
func (q *QEMU) Args() []string {
	def := func(s, d string) string {
		if s == "" {
			return d
		}
		return s
	}
	a := []string{"-accel", def(q.Accel, "tcg")}
	if q.CPU != "" {
		a = append(a, "-cpu", q.CPU)
	}
	mem, smp := q.MemoryMiB, q.SMP
	if mem == 0 {
		mem = 3072
	}
	if smp == 0 {
		smp = 2
	}
	a = append(a, "-M", def(q.Machine, "q35"), "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(smp),
		"-nographic", "-no-reboot", "-kernel", q.Kernel)
	if q.Initrd != "" {
		a = append(a, "-initrd", q.Initrd)
	}
	if q.Append != "" {
		a = append(a, "-append", q.Append)
	}
	return append(a, q.Extra...)
}

// ErrNoQEMU is returned when qemu-system-x86_64 is not installed.
var ErrNoQEMU = errors.New("qemu-system-x86_64 not found: install the Debian package " + QEMUPackage + " (apt-get install " + QEMUPackage + ")")

const ringSize = 20000

// VM is a running QEMU with its serial console.
type VM struct {
	Cmd     *exec.Cmd
	LogPath string

	mu       sync.Mutex
	cond     *sync.Cond
	lines    []string // ring of the last ringSize lines
	first    int      // absolute number of lines[0]
	cursor   int      // absolute line number WaitFor starts at
	exited   bool
	exitErr  error
	failLine string
	timedOut bool
	killOnce sync.Once

	echo    func(string) // called by one goroutine at a time
	echoMu  sync.Mutex
	failOn  *regexp.Regexp
	timeout time.Duration
	done    chan struct{} // closed after QEMU exited and the console is drained
	timer   *time.Timer
	logFile *os.File
}

// Start launches QEMU. The caller must call Kill (tests: t.Cleanup(vm.Kill)).
func (l *Lab) Start(q QEMU) (*VM, error) {
	bin := q.Binary
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, ErrNoQEMU
	}
	if q.Name == "" {
		q.Name = "qemu"
	}
	if q.Timeout == 0 {
		q.Timeout = 5 * time.Minute
	}
	if q.FailOn == nil {
		q.FailOn = DefaultFailOn
	}
	vm := &VM{echo: q.Echo, failOn: q.FailOn, timeout: q.Timeout, done: make(chan struct{})}
	vm.cond = sync.NewCond(&vm.mu)
	if q.LogDir != "-" {
		dir := q.LogDir
		if dir == "" {
			dir = filepath.Join(l.Cache, "lab", "logs")
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		vm.LogPath = filepath.Join(dir, fmt.Sprintf("%s-%s.log", q.Name, time.Now().Format("20060102-150405.000")))
		if vm.logFile, err = os.Create(vm.LogPath); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command(path, q.Args()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	vm.Cmd = cmd
	if vm.logFile != nil {
		fmt.Fprintf(vm.logFile, "# %s %s\n", path, strings.Join(q.Args(), " "))
	}
	l.Logf("lab: starting %s %s", path, strings.Join(q.Args(), " "))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start %s: %w", path, err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); vm.read(stdout, "") }()
	go func() { defer readers.Done(); vm.read(stderr, "qemu stderr: ") }()
	vm.timer = time.AfterFunc(q.Timeout, func() {
		vm.mu.Lock()
		vm.timedOut = true
		vm.mu.Unlock()
		vm.kill()
	})
	go func() {
		readers.Wait()
		err := cmd.Wait()
		vm.timer.Stop()
		vm.mu.Lock()
		vm.exited = true
		vm.exitErr = err
		if vm.logFile != nil {
			fmt.Fprintf(vm.logFile, "# qemu exited: %v\n", err)
			vm.logFile.Close()
		}
		vm.cond.Broadcast()
		vm.mu.Unlock()
		close(vm.done)
	}()
	return vm, nil
}

func (vm *VM) read(r io.Reader, prefix string) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		s, err := br.ReadString('\n')
		if s != "" {
			vm.addLine(prefix + strings.TrimRight(s, "\r\n"))
		}
		if err != nil {
			return
		}
	}
}

// ansiRe matches the terminal control sequences SeaBIOS and the kernel emit.
var ansiRe = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|[c()][0-9A-B]?)`)

func (vm *VM) addLine(s string) {
	s = ansiRe.ReplaceAllString(strings.ReplaceAll(s, "\r", ""), "")
	vm.mu.Lock()
	vm.lines = append(vm.lines, s)
	if len(vm.lines) > ringSize {
		drop := len(vm.lines) - ringSize
		vm.lines = append([]string(nil), vm.lines[drop:]...)
		vm.first += drop
	}
	if vm.logFile != nil {
		fmt.Fprintln(vm.logFile, s)
	}
	if vm.failLine == "" && vm.failOn != nil && vm.failOn.MatchString(s) {
		vm.failLine = s
	}
	vm.cond.Broadcast()
	vm.mu.Unlock()
	if vm.echo != nil {
		vm.echoMu.Lock() // stdout and stderr readers both echo
		vm.echo(s)
		vm.echoMu.Unlock()
	}
}

// Tail returns the last n console lines.
func (vm *VM) Tail(n int) []string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.tailLocked(n)
}

func (vm *VM) tailLocked(n int) []string {
	if n > len(vm.lines) {
		n = len(vm.lines)
	}
	return append([]string(nil), vm.lines[len(vm.lines)-n:]...)
}

func (vm *VM) tailMsg() string {
	t := vm.tailLocked(40)
	return fmt.Sprintf("last %d console lines (full log: %s):\n\t%s", len(t), vm.LogPath, strings.Join(t, "\n\t"))
}

// Lines returns every console line still in the ring buffer.
func (vm *VM) Lines() []string { return vm.Tail(ringSize) }

// WaitFor waits until a console line after the previous match matches re
// and returns its submatches. It fails at once if QEMU exits, the overall
// deadline kills it, or a FailOn line appears; the error carries the last
// 40 console lines. Successive calls consume the console in order.
func (vm *VM) WaitFor(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() {
		vm.mu.Lock()
		vm.cond.Broadcast()
		vm.mu.Unlock()
	})
	defer t.Stop()
	vm.mu.Lock()
	defer vm.mu.Unlock()
	for {
		start := vm.cursor - vm.first
		if start < 0 {
			start = 0
		}
		for i := start; i < len(vm.lines); i++ {
			if m := re.FindStringSubmatch(vm.lines[i]); m != nil {
				vm.cursor = vm.first + i + 1
				return m, nil
			}
		}
		vm.cursor = vm.first + len(vm.lines)
		switch {
		case vm.failLine != "":
			return nil, fmt.Errorf("waiting for /%s/: console reported failure %q; %s", re, vm.failLine, vm.tailMsg())
		case vm.timedOut:
			return nil, fmt.Errorf("waiting for /%s/: overall timeout %v hit, QEMU killed; %s", re, vm.timeout, vm.tailMsg())
		case vm.exited:
			return nil, fmt.Errorf("waiting for /%s/: QEMU exited (%v); %s", re, vm.exitErr, vm.tailMsg())
		case !time.Now().Before(deadline):
			return nil, fmt.Errorf("waiting for /%s/: no match within %v; %s", re, timeout, vm.tailMsg())
		}
		vm.cond.Wait()
	}
}

// Wait waits up to timeout for QEMU to exit and returns its exit status. On
// timeout QEMU is killed and the error carries the console tail.
func (vm *VM) Wait(timeout time.Duration) error {
	select {
	case <-vm.done:
	case <-time.After(timeout):
		vm.kill()
		<-vm.done
		vm.mu.Lock()
		defer vm.mu.Unlock()
		return fmt.Errorf("QEMU did not exit within %v, killed; %s", timeout, vm.tailMsg())
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.timedOut {
		return fmt.Errorf("overall timeout %v hit, QEMU killed; %s", vm.timeout, vm.tailMsg())
	}
	if vm.exitErr != nil {
		return fmt.Errorf("QEMU exited with %v; %s", vm.exitErr, vm.tailMsg())
	}
	return nil
}

// Exited reports whether QEMU has exited.
func (vm *VM) Exited() bool {
	select {
	case <-vm.done:
		return true
	default:
		return false
	}
}

func (vm *VM) kill() {
	vm.killOnce.Do(func() {
		if vm.Cmd.Process != nil {
			syscall.Kill(-vm.Cmd.Process.Pid, syscall.SIGKILL)
		}
	})
}

// Kill kills QEMU's process group (if still running) and waits until it is
// gone and its console drained. Safe to call more than once; use it in
// t.Cleanup so no QEMU outlives a test.
func (vm *VM) Kill() {
	if !vm.Exited() {
		vm.kill()
	}
	<-vm.done
}

// AddAgentSerial gives the guest a second 16550 UART (COM2 at 0x2f8, the
// guest's /dev/ttyS1, where qemu-ga listens) on a unix socket that QEMU
// serves (connect with DialAgent). A -device isa-serial turns off QEMU's
// default serial, so COM1 is put back on stdio explicitly first.
func (q *QEMU) AddAgentSerial(sock string) {
	q.Extra = append(q.Extra,
		"-serial", "mon:stdio",
		"-chardev", "socket,id=qga0,path="+sock+",server=on,wait=off",
		"-device", "isa-serial,chardev=qga0")
}

// AddQMP serves QMP on a unix socket (connect with DialQMP).
func (q *QEMU) AddQMP(sock string) {
	q.Extra = append(q.Extra, "-qmp", "unix:"+sock+",server=on,wait=off")
}

// EnableS3 offers ACPI S3 to the guest (q35's ICH9 LPC).
func (q *QEMU) EnableS3() {
	q.Extra = append(q.Extra, "-global", "ICH9-LPC.disable_s3=0")
}
