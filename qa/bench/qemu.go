package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pmvm/pmvm/qa/qmp"
)

// QEMUBinary is the peer's emulator.
const QEMUBinary = "qemu-system-x86_64"

// QEMUAccel is the accelerator the peer runs with: the same /dev/kvm as
// pmvm (no guest code runs in these benchmarks: QEMU stays paused until
// the resume's final `cont`).
const QEMUAccel = "kvm"

// qemuBandwidth lifts QEMU's default 32 MiB/s migration bandwidth cap, as
// libvirt does for a save to a file; otherwise the cap, not the work,
// would set QEMU's numbers.
const qemuBandwidth = 64 << 30 // bytes/s

// CheckQEMU says why the peer cannot run, or nil.
func CheckQEMU() error {
	if _, err := exec.LookPath(QEMUBinary); err != nil {
		return fmt.Errorf("%s not found (%w): install Debian's qemu-system-x86 (make deps)", QEMUBinary, err)
	}
	return nil
}

// QEMUSpec is one peer VM: RAM on a shared file, as pmvm's guest.
type QEMUSpec struct {
	Backing string // a /dev/shm file of Size bytes
	Size    uint64
	// IgnoreShared sets the x-ignore-shared migration capability: RAM in a
	// shared file backing is left out of the stream (QEMU 7.2's closest to
	// cpr-reboot). Without it the stream carries all of RAM.
	IgnoreShared bool

	// A real guest (the whole-cycle benchmarks) sets these; the tiny
	// guest's runs leave them empty (QEMU paused, nothing booted).
	Kernel, Initrd, Append string // -kernel/-initrd/-append
	VCPUs                  int    // -smp (default 1)
	CPU                    string // -cpu, e.g. "host"
	Align                  string // the backing's alignment, e.g. "2M" for device-dax
	Console                string // COM1 to this file
	AgentSocket            string // COM2 (the guest's ttyS1, qemu-ga) on this unix socket, QEMU listening
}

// QEMU is a running peer process with its QMP connection.
type QEMU struct {
	QMP    *qmp.Client
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	exited chan struct{} // closed when the process has been reaped
	err    error         // cmd.Wait's error; read after exited
}

func (s QEMUSpec) args(sock string, incoming bool) []string {
	size := strconv.FormatUint(s.Size, 10)
	backend := "memory-backend-file,id=ram0,size=" + size + ",mem-path=" + s.Backing + ",share=on"
	if s.Align != "" {
		backend += ",align=" + s.Align
	}
	a := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-S",
		"-machine", "pc,accel=" + QEMUAccel + ",memory-backend=ram0",
		"-object", backend,
		"-m", strconv.FormatUint(s.Size>>20, 10) + "M", "-smp", strconv.Itoa(max(s.VCPUs, 1)),
		"-qmp", "unix:" + sock, // QEMU connects to our listening socket
	}
	if s.CPU != "" {
		a = append(a, "-cpu", s.CPU)
	}
	if s.Kernel != "" {
		a = append(a, "-kernel", s.Kernel, "-initrd", s.Initrd, "-append", s.Append)
	}
	if s.Console != "" {
		a = append(a, "-serial", "file:"+s.Console)
	}
	if s.AgentSocket != "" {
		a = append(a, "-chardev", "socket,id=qga0,path="+s.AgentSocket+",server=on,wait=off",
			"-device", "isa-serial,chardev=qga0")
	}
	if incoming {
		a = append(a, "-incoming", "defer")
	}
	return a
}

// StartQEMU starts a paused QEMU (with incoming: waiting for an incoming
// migration, -incoming defer), connects QMP and sets the migration
// capabilities and bandwidth of spec. It returns once QEMU answers QMP,
// that is once its machine is built and its main loop runs.
func StartQEMU(spec QEMUSpec, incoming bool) (*QEMU, error) {
	// QEMU's option parser splits on ',' and '=', which test directory
	// names contain: the socket goes in a directory of its own.
	sockDir, err := os.MkdirTemp("", "pmvm-bench-qmp")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "qmp.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("QMP socket: %w", err)
	}
	defer l.Close()

	q := &QEMU{stderr: new(bytes.Buffer), exited: make(chan struct{})}
	q.cmd = exec.Command(QEMUBinary, spec.args(sock, incoming)...)
	q.cmd.Stdout = q.stderr
	q.cmd.Stderr = q.stderr
	if err := q.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", QEMUBinary, err)
	}
	go func() {
		q.err = q.cmd.Wait()
		close(q.exited)
	}()

	type accepted struct {
		c   *net.UnixConn
		err error
	}
	acc := make(chan accepted, 1)
	l.SetDeadline(time.Now().Add(stepTimeout))
	go func() {
		c, err := l.AcceptUnix()
		acc <- accepted{c, err}
	}()
	var conn *net.UnixConn
	select {
	case a := <-acc:
		if a.err != nil {
			return nil, errors.Join(fmt.Errorf("QEMU did not connect to QMP: %w", a.err), q.Kill())
		}
		conn = a.c
	case <-q.exited:
		return nil, fmt.Errorf("QEMU exited before QMP (%v): %s", q.err, q.stderr)
	}
	if q.QMP, err = qmp.New(conn, stepTimeout); err != nil {
		return nil, errors.Join(fmt.Errorf("%w (QEMU said: %s)", err, q.stderr), q.Kill())
	}
	caps := []map[string]any{
		{"capability": "x-ignore-shared", "state": spec.IgnoreShared},
		{"capability": "events", "state": true},
	}
	if _, err := q.QMP.Execute("migrate-set-capabilities", map[string]any{"capabilities": caps}, stepTimeout); err != nil {
		return nil, errors.Join(err, q.Kill())
	}
	if _, err := q.QMP.Execute("migrate-set-parameters", map[string]any{"max-bandwidth": qemuBandwidth}, stepTimeout); err != nil {
		return nil, errors.Join(err, q.Kill())
	}
	return q, nil
}

// Quit asks QEMU to quit and waits for it; it is killed if it does not.
func (q *QEMU) Quit() error {
	_, qerr := q.QMP.Execute("quit", nil, 5*time.Second)
	select {
	case <-q.exited:
	case <-time.After(10 * time.Second):
		return errors.Join(qerr, fmt.Errorf("QEMU did not quit"), q.Kill())
	}
	q.QMP.Close()
	return nil
}

// Kill kills the process this QEMU started (by its pid) and waits for it.
func (q *QEMU) Kill() error {
	if q.QMP != nil {
		q.QMP.Close()
	}
	_ = q.cmd.Process.Kill()
	select {
	case <-q.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("QEMU pid %d did not die", q.cmd.Process.Pid)
	}
}

// QEMUSaveTimes splits one peer save.
type QEMUSaveTimes struct {
	Migrate time.Duration // getfd + migrate until the MIGRATION completed event
	Total   time.Duration // until the stream is also durable in the state file
}

// Save migrates the paused VM into a state file at path: from handing
// QEMU a pipe (getfd) and `migrate fd:` until the migration completed and
// every byte from the pipe is durable in the file (temporary file, fsync,
// rename, directory fsync).
func (q *QEMU) Save(path string) (QEMUSaveTimes, error) {
	var t QEMUSaveTimes
	t0 := time.Now()
	r, w, err := os.Pipe()
	if err != nil {
		return t, err
	}
	defer r.Close()
	written := make(chan error, 1)
	go func() { written <- writeDurable(path, r) }()
	err = q.QMP.SendFile("state", w)
	w.Close() // QEMU holds its own copy; EOF comes when it closes that
	if err != nil {
		r.Close()
		<-written
		return t, err
	}
	if _, err := q.QMP.Execute("migrate", map[string]any{"uri": "fd:state"}, stepTimeout); err != nil {
		r.Close()
		<-written
		return t, err
	}
	ev, merr := q.QMP.WaitMigration(10 * time.Minute)
	var werr error
	select {
	case werr = <-written:
	case <-time.After(10 * time.Minute):
		werr = errors.New("the state file writer never saw EOF")
	}
	t = QEMUSaveTimes{Migrate: ev.At.Sub(t0), Total: time.Since(t0)}
	return t, errors.Join(merr, werr)
}

// writeDurable copies r into path as pmvm's state package writes a state
// file: a temporary file, fsync, rename over path, fsync of the directory.
func writeDurable(path string, r io.Reader) (err error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("state stream: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// QEMUResumeTimes splits one peer resume.
type QEMUResumeTimes struct {
	Start time.Duration // exec until QMP answers and the capabilities are set (machine built)
	Load  time.Duration // getfd + migrate-incoming fd: until the RESUME event after cont
}

// Total is the whole resume, process start included.
func (t QEMUResumeTimes) Total() time.Duration { return t.Start + t.Load }

// ResumeQEMU starts a new QEMU on spec's backing, loads the state file at
// path (an incoming migration) and continues the VM; it times it up to the
// RESUME event, checks that QEMU says "running", and quits QEMU.
func ResumeQEMU(spec QEMUSpec, path string) (QEMUResumeTimes, error) {
	q, t, err := LoadQEMU(spec, path)
	if err != nil {
		return t, err
	}
	st, err := q.QMP.Status()
	if err == nil && st != "running" {
		err = fmt.Errorf("QEMU is %q after the resume, want running", st)
	}
	return t, errors.Join(err, q.Quit())
}

// LoadQEMU is ResumeQEMU without the quit: the resumed QEMU is returned
// running.
func LoadQEMU(spec QEMUSpec, path string) (*QEMU, QEMUResumeTimes, error) {
	var t QEMUResumeTimes
	t0 := time.Now()
	q, err := StartQEMU(spec, true)
	if err != nil {
		return nil, t, err
	}
	t1 := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return nil, t, errors.Join(err, q.Kill())
	}
	defer f.Close()
	if err := q.QMP.SendFile("state", f); err != nil {
		return nil, t, errors.Join(err, q.Kill())
	}
	if _, err := q.QMP.Execute("migrate-incoming", map[string]any{"uri": "fd:state"}, stepTimeout); err != nil {
		return nil, t, errors.Join(err, q.Kill())
	}
	if _, err := q.QMP.WaitMigration(10 * time.Minute); err != nil {
		return nil, t, errors.Join(fmt.Errorf("incoming: %w (QEMU said: %s)", err, q.stderr), q.Kill())
	}
	if _, err := q.QMP.Execute("cont", nil, stepTimeout); err != nil {
		return nil, t, errors.Join(err, q.Kill())
	}
	ev, err := q.QMP.WaitEvent("RESUME", nil, stepTimeout)
	if err != nil {
		return nil, t, errors.Join(err, q.Kill())
	}
	return q, QEMUResumeTimes{Start: t1.Sub(t0), Load: ev.At.Sub(t1)}, nil
}
