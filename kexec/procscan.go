package kexec

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The /proc scan finds pmvm processes that a host update must know about:
// one running a VM whose config is not in vm_dir, or one whose control
// socket does not answer yet, would be killed unsaved by the kexec.

// pmvmRun is a "pmvm run CONFIG" process found in /proc.
type pmvmRun struct {
	pid    int
	config string // canonical path of CONFIG
}

// findPMVMRuns lists processes whose command line is "pmvm run CONFIG ...".
func findPMVMRuns() []pmvmRun {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []pmvmRun
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if cfg := runConfigOf(filepath.Join("/proc", e.Name())); cfg != "" {
			out = append(out, pmvmRun{pid: pid, config: cfg})
		}
	}
	return out
}

// runConfigOf returns the canonical CONFIG of the process at procDir
// (/proc/PID) if it runs "pmvm run CONFIG", else "". A relative CONFIG is
// taken from the process's working directory.
func runConfigOf(procDir string) string {
	b, err := os.ReadFile(filepath.Join(procDir, "cmdline"))
	if err != nil || len(b) == 0 {
		return ""
	}
	cfg := pmvmRunConfig(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"))
	if cfg == "" {
		return ""
	}
	if !filepath.IsAbs(cfg) {
		cwd, err := os.Readlink(filepath.Join(procDir, "cwd"))
		if err != nil {
			return ""
		}
		cfg = filepath.Join(cwd, cfg)
	}
	return canonical(cfg)
}

// pmvmRunConfig returns CONFIG of argv "pmvm run [flags] CONFIG [flags]",
// or "" for any other command line.
func pmvmRunConfig(argv []string) string {
	if len(argv) < 3 || filepath.Base(argv[0]) != "pmvm" || argv[1] != "run" {
		return ""
	}
	args := argv[2:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 < len(args) {
				return args[i+1]
			}
			return ""
		}
		if strings.HasPrefix(a, "-") {
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && (name == "log-level" || name == "incoming" || name == "host-config") {
				i++ // the flag's value
			}
			continue
		}
		return a
	}
	return ""
}

// canonical is p absolute with its symlinks resolved, so that two names of
// one config compare equal.
func canonical(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}
