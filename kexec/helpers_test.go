package kexec

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"

	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/lifecycle"
	"github.com/pmvm/pmvm/vmm/timeline"
)

// fakePMVMEnv makes this test binary act as `pmvm run CONFIG --incoming
// STATE` (see fakePMVM): restores and rollbacks start it like the real one.
const fakePMVMEnv = "PMVM_KEXEC_TEST_FAKE_PMVM"

func TestMain(m *testing.M) {
	if os.Getenv(fakePMVMEnv) == "1" {
		os.Exit(fakePMVM(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakePMVMCommand is the PMVM argv prefix that runs fakePMVM.
func fakePMVMCommand(t *testing.T) []string {
	exe, err := os.Executable()
	require.NoError(t, err)
	return []string{"/usr/bin/env", fakePMVMEnv + "=1", exe}
}

// fakeConsoleLine is what fakePMVM's guest prints on its console.
const fakeConsoleLine = "fake guest: resumed"

// fakePMVM plays `pmvm run CONFIG --incoming STATE` for restore tests: it
// records its arguments in CONFIG.args, prints a guest console line on
// stdout and the resume marker on stderr, and
// answers status "running" on the config's control socket until "stop".
// If CONFIG.fail exists it prints its content and exits 1 at once, like a
// pmvm that refuses the state file; if CONFIG.spend exists it moves the
// state file aside and exits 1, like a pmvm whose wake failed after that.
func fakePMVM(args []string) int {
	if len(args) != 4 || args[0] != "run" || args[2] != "--incoming" {
		fmt.Fprintf(os.Stderr, "fake pmvm: unexpected arguments %q\n", args)
		return 2
	}
	cfgPath, statePath := args[1], args[3]
	os.WriteFile(cfgPath+".args", []byte(strings.Join(args, " ")+"\n"+os.Getenv("PMVM_RUNTIME_DIR")+"\n"), 0o600)
	if msg, err := os.ReadFile(cfgPath + ".fail"); err == nil {
		fmt.Fprintf(os.Stderr, "pmvm run: %s", msg)
		return 1
	}
	if _, err := os.Stat(cfgPath + ".spend"); err == nil {
		// Like a pmvm that spent the state file, then failed to wake.
		state.MoveAsideResumed(statePath)
		fmt.Fprintln(os.Stderr, "pmvm run: cannot wake: only 0 of 1 vCPUs left the guest")
		return 1
	}
	cfg, err := configs.Load(cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake pmvm:", err)
		return 2
	}
	if _, err := os.Stat(statePath); err != nil {
		fmt.Fprintln(os.Stderr, "fake pmvm:", err)
		return 1
	}
	ln, err := net.Listen("unix", cfg.Control.Socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake pmvm:", err)
		return 1
	}
	defer os.Remove(cfg.Control.Socket)
	since := time.Now()
	fmt.Fprintln(os.Stdout, fakeConsoleLine)
	fmt.Fprintf(os.Stderr, "resume timeline:\n  %s\n", resumedMarker)
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		var req vmm.ControlRequest
		line, _ := bufio.NewReader(c).ReadBytes('\n')
		json.Unmarshal(line, &req)
		resp := vmm.ControlResponse{OK: true, Status: &vmm.Status{Name: cfg.Name, RunState: vmm.StateRunning, Since: since}}
		json.NewEncoder(c).Encode(resp)
		c.Close()
		if req.Command == "stop" {
			return 4
		}
	}
}

// fakeVM is a control socket that answers like a VM's pmvm, for update
// tests: status, save (writing a real state file, then "exiting"), wakeup.
type fakeVM struct {
	t         *testing.T
	name      string
	config    string
	control   string
	statePath string

	mu       sync.Mutex
	runstate vmm.RunState
	saveErr  string        // save answers this error...
	failTo   vmm.RunState  // ...and leaves the VM in this runstate
	saveTook time.Duration // save takes this long before it answers
	got      []string      // commands received
	ln       net.Listener
	exited   bool
}

func (f *fakeVM) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func (f *fakeVM) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		go f.handle(c)
	}
}

func (f *fakeVM) handle(c net.Conn) {
	defer c.Close()
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return
	}
	var req vmm.ControlRequest
	if json.Unmarshal(line, &req) != nil {
		return
	}
	f.mu.Lock()
	f.got = append(f.got, req.Command)
	took := f.saveTook
	f.mu.Unlock()
	if req.Command == "save" && took > 0 {
		time.Sleep(took) // the guest's S3 entry and the state write
	}
	f.mu.Lock()
	var resp vmm.ControlResponse
	exit := false
	switch req.Command {
	case "status":
		resp = vmm.ControlResponse{OK: true, Status: &vmm.Status{Name: f.name, RunState: f.runstate, Since: time.Now()}}
	case "wakeup":
		if f.runstate != vmm.StateSuspended {
			resp.Error = "not suspended"
		} else {
			f.runstate = vmm.StateRunning
			resp.OK = true
		}
	case "save":
		tl := timeline.New("save")
		tl.Mark("", lifecycle.StepSaveRequested, "")
		if f.saveErr != "" {
			if f.failTo != "" {
				f.runstate = f.failTo
				tl.Mark("", lifecycle.StepGuestInS3, "")
			}
			resp = vmm.ControlResponse{Error: f.saveErr, Timeline: tl}
			break
		}
		if f.runstate == vmm.StateRunning {
			tl.Mark("", lifecycle.StepGuestInS3, "")
		}
		sf := &state.File{Header: state.Header{Created: time.Now(), PMVMVersion: "fake", VMName: f.name, Mode: memspec.ModeReboot}}
		if err := sf.AddJSON("machine", 1, map[string]string{"fake": f.name}); err != nil {
			resp.Error = err.Error()
			break
		}
		if err := state.WriteFile(req.State, sf); err != nil {
			resp.Error = err.Error()
			break
		}
		tl.Mark("", lifecycle.StepStateDurable, "")
		f.runstate = vmm.StateSaved
		resp = vmm.ControlResponse{OK: true, Timeline: tl}
		exit = true
	default:
		resp.Error = "unknown command " + req.Command
	}
	f.mu.Unlock()
	json.NewEncoder(c).Encode(resp)
	if exit {
		f.stop() // like pmvm, which exits once a save is answered
	}
}

func (f *fakeVM) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.exited {
		f.exited = true
		f.ln.Close()
		os.Remove(f.control)
	}
}

// testHost is a host config for tests: every directory under root.
func testHost(t *testing.T, root string) *configs.Host {
	t.Helper()
	h := configs.DefaultHost()
	h.VMDir = filepath.Join(root, "vms")
	h.StateDir = filepath.Join(root, "state")
	h.RuntimeDir = filepath.Join(root, "run")
	h.LogDir = filepath.Join(root, "log")
	h.RestoreTimeout = configs.NewDuration(20 * time.Second)
	f := false
	h.Limits.Cgroups = &f
	for _, d := range []string{h.VMDir, h.StateDir, h.RuntimeDir, h.LogDir} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	return h
}

// shmFile creates a 64 MiB file on /dev/shm for a VM's memory block.
func shmFile(t *testing.T, name string) string {
	t.Helper()
	p := fmt.Sprintf("/dev/shm/pmvm-kexec-test-%d-%s", os.Getpid(), name)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	require.NoError(t, err, "/dev/shm must be a writable tmpfs")
	require.NoError(t, f.Truncate(64<<20))
	require.NoError(t, f.Close())
	t.Cleanup(func() { os.Remove(p) })
	return p
}

// vmKind is the memory and mode of a test VM config.
type vmKind int

const (
	kindPreserved  vmKind = iota // mode reboot, /dev/shm file with preserved_across_kexec: carried over
	kindAnonReboot               // mode reboot on anonymous RAM: refused
	kindModeNone                 // mode none on a shm file: refused
)

// writeVMConfig writes vm_dir/<name>.toml; its sockets go to a short
// directory of their own (unix socket paths are short).
func writeVMConfig(t *testing.T, h *configs.Host, name string, kind vmKind) (cfgPath, control string) {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "pk")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	control = filepath.Join(sockDir, "c.sock")
	mode, mem := "reboot", ""
	switch kind {
	case kindPreserved:
		mem = fmt.Sprintf("backing = %q\nshared = true\npreserved_across_kexec = true", shmFile(t, name))
	case kindAnonReboot:
		mem = `backing = "anonymous"`
	case kindModeNone:
		mode = "none"
		mem = fmt.Sprintf("backing = %q\nshared = true", shmFile(t, name))
	}
	doc := fmt.Sprintf(`name = %q
mode = %q
vcpus = 1
[boot]
kernel = "/nonexistent/bzImage"
[[memory]]
name = "ram0"
size = "64MiB"
%s
[console]
output = "stdout"
[agent]
socket = %q
[control]
socket = %q
`, name, mode, mem, filepath.Join(sockDir, "a.sock"), control)
	cfgPath = filepath.Join(h.VMDir, name+".toml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(doc), 0o644))
	return cfgPath, control
}

// startFakeVM writes the config of a VM and serves its control socket.
func startFakeVM(t *testing.T, h *configs.Host, name string, kind vmKind, runstate vmm.RunState) *fakeVM {
	t.Helper()
	cfg, control := writeVMConfig(t, h, name, kind)
	ln, err := net.Listen("unix", control)
	require.NoError(t, err)
	f := &fakeVM{t: t, name: name, config: cfg, control: control, statePath: h.StatePath(name), runstate: runstate, ln: ln}
	go f.serve()
	t.Cleanup(f.stop)
	return f
}

// stopRestored stops a VM restored by fakePMVM through its control socket.
func stopRestored(t *testing.T, control string) {
	t.Helper()
	vmm.CallControl(control, vmm.ControlRequest{Command: "stop", Timeout: 2000})
}

// testLog is a logger into a buffer, safe for concurrent writes.
func testLog() (zerolog.Logger, *syncBuffer) {
	b := &syncBuffer{}
	return zerolog.New(b), b
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeBzImage writes a file with a 64-bit, above-4G bzImage boot header.
func fakeBzImage(t *testing.T, dir string) string {
	t.Helper()
	return fakeBzImageVersion(t, dir, "6.99.0-test (fake)")
}

// fakeBzImageVersion is fakeBzImage with the given kernel_version string.
func fakeBzImageVersion(t *testing.T, dir, version string) string {
	t.Helper()
	img := make([]byte, 0x1000)
	img[0x1f1] = 4
	copy(img[0x202:], "HdrS")
	img[0x206], img[0x207] = 0x0f, 0x02 // protocol 2.15
	img[0x211] = 0x01                   // LOADED_HIGH
	img[0x236] = 0x03                   // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
	img[0x20e] = 0x00
	img[0x20f] = 0x02 // kernel_version at 0x200 + 0x200
	copy(img[0x400:], version+"\x00")
	p := filepath.Join(dir, "bzImage")
	require.NoError(t, os.WriteFile(p, img, 0o644))
	return p
}

// writeScript writes an executable shell script.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
	return p
}

// readEnvFile reads KEY=VALUE lines written by `env > FILE`.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	return env
}

// processGone reports whether pid has exited (or is a zombie).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

type configsHook = configs.Hook

func configsDuration(seconds int) configs.Duration {
	return configs.NewDuration(time.Duration(seconds) * time.Second)
}
