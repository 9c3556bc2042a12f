package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/lifecycle"
)

// defaultRuntimeDir is where a VM's sockets live unless its config says
// otherwise: /run/pmvm/NAME/control.sock. PMVM_RUNTIME_DIR overrides it.
const defaultRuntimeDir = "/run/pmvm"

// controlSocket finds the control socket of VM name: --control wins, then a
// path given as the name, then the runtime directory convention.
func controlSocket(name, flagPath string) string {
	if flagPath != "" {
		return flagPath
	}
	if strings.Contains(name, "/") {
		return name
	}
	dir := os.Getenv("PMVM_RUNTIME_DIR")
	if dir == "" {
		dir = defaultRuntimeDir
	}
	return filepath.Join(dir, name, "control.sock")
}

// controlFlags parses the flags shared by the commands that talk to a
// running VM and returns its control socket.
func controlFlags(name string, args []string, stderr io.Writer, extra func(fs *flag.FlagSet)) (string, *flag.FlagSet, bool) {
	fs := flag.NewFlagSet("pmvm "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	ctl := fs.String("control", "", "control socket path (default "+defaultRuntimeDir+"/NAME/control.sock)")
	if extra != nil {
		extra(fs)
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return "", nil, false
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "pmvm %s: want exactly one VM NAME, got %d arguments\n", name, len(pos))
		return "", nil, false
	}
	return controlSocket(pos[0], *ctl), fs, true
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	var asJSON *bool
	sock, _, ok := controlFlags("status", args, stderr, func(fs *flag.FlagSet) {
		asJSON = fs.Bool("json", false, "print JSON")
	})
	if !ok {
		return exitUsage
	}
	resp, err := vmm.CallControl(sock, vmm.ControlRequest{Command: "status", Timeout: 5000})
	if err != nil {
		fmt.Fprintln(stderr, "pmvm status:", err)
		return exitFailure
	}
	if !resp.OK || resp.Status == nil {
		fmt.Fprintln(stderr, "pmvm status:", resp.Error)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(resp.Status)
		return 0
	}
	printStatus(stdout, resp.Status)
	return 0
}

func printStatus(w io.Writer, s *vmm.Status) {
	fmt.Fprintf(w, "name:      %s\n", s.Name)
	fmt.Fprintf(w, "runstate:  %s (since %s, %s)\n", s.RunState, s.Since.Format("15:04:05.000"), time.Since(s.Since).Round(time.Millisecond))
	fmt.Fprintf(w, "vcpus:     %d\n", s.VCPUs)
	fmt.Fprintf(w, "memory:    %s\n", memspec.FormatSize(s.MemoryBytes))
	fmt.Fprintf(w, "uptime:    %s\n", s.Uptime.Round(time.Millisecond))
	if s.Last.To != "" {
		fmt.Fprintf(w, "last:      %s -> %s at %s (%s in %s)\n", s.Last.From, s.Last.To, s.Last.At.Format("15:04:05.000"), s.Last.Took.Round(time.Millisecond), s.Last.From)
	}
}

func cmdSuspend(args []string, stdout, stderr io.Writer) int {
	var timeout *time.Duration
	sock, _, ok := controlFlags("suspend", args, stderr, func(fs *flag.FlagSet) {
		timeout = fs.Duration("timeout", 30*time.Second, "how long the guest may take to reach S3")
	})
	if !ok {
		return exitUsage
	}
	took, err := lifecycle.RequestSuspend(sock, *timeout)
	if err != nil {
		fmt.Fprintln(stderr, "pmvm suspend:", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "suspended in %s\n", took.Round(time.Millisecond))
	return 0
}

func cmdWakeup(args []string, stdout, stderr io.Writer) int {
	sock, _, ok := controlFlags("wakeup", args, stderr, nil)
	if !ok {
		return exitUsage
	}
	took, err := lifecycle.RequestWake(sock, 30*time.Second)
	if err != nil {
		fmt.Fprintln(stderr, "pmvm wakeup:", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "woken in %s\n", took.Round(time.Millisecond))
	return 0
}

func cmdSave(args []string, stdout, stderr io.Writer) int {
	var timeout *time.Duration
	var statePath *string
	sock, _, ok := controlFlags("save", args, stderr, func(fs *flag.FlagSet) {
		timeout = fs.Duration("timeout", 60*time.Second, "how long suspending and saving may take")
		statePath = fs.String("state", "", "write the state file here (required)")
	})
	if !ok {
		return exitUsage
	}
	if *statePath == "" {
		fmt.Fprintln(stderr, "pmvm save: --state FILE is required")
		return exitUsage
	}
	abs, err := filepath.Abs(*statePath)
	if err != nil {
		fmt.Fprintln(stderr, "pmvm save:", err)
		return exitUsage
	}
	tl, err := lifecycle.RequestSave(sock, abs, *timeout)
	if err != nil {
		fmt.Fprintln(stderr, "pmvm save:", err)
		return exitFailure
	}
	// pmvm exits once it has answered; until then it holds the VM's
	// sockets and memory lock, which a resume needs.
	switch lifecycle.WaitExited(sock, 30*time.Second, tl, "") {
	case lifecycle.PMVMRunning:
		fmt.Fprintf(stderr, "pmvm save: the state is saved, but pmvm is still running after 30s: wait for it to exit before resuming\n")
	case lifecycle.PMVMDied:
		fmt.Fprintf(stderr, "pmvm save: the state is saved, then pmvm died without closing its control socket (was it killed?); "+
			"the state file is complete: resume with pmvm run CONFIG --incoming %s (it replaces the stale socket %s left behind)\n", abs, sock)
	}
	if tl != nil {
		fmt.Fprint(stdout, tl.String())
	}
	fmt.Fprintf(stdout, "saved to %s\n", abs)
	return 0
}
