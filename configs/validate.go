package configs

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// Limits checked by Validate.
const (
	MaxVCPUs      = 254              // vCPU count (8-bit xAPIC IDs, no x2APIC)
	MemoryAlign   = 2 * memspec.MiB  // every memory block size is a multiple of this
	MinMemory     = 64 * memspec.MiB // total guest RAM, lower bound
	MaxMemory     = 1 * memspec.TiB  // total guest RAM, upper bound
	MaxSocketPath = 107              // bytes: sun_path is 108 including the NUL
	MaxCmdline    = 2047             // bytes: x86 COMMAND_LINE_SIZE is 2048 including the NUL
	maxNameLen    = 63               // memory block names
	namePattern   = `^[a-z0-9][a-z0-9._-]{0,62}$`
	blockPattern  = `^[a-z0-9_-]+$`
)

var (
	nameRE  = regexp.MustCompile(namePattern)
	blockRE = regexp.MustCompile(blockPattern)
)

// FieldError is one validation problem: Field names the place in the config
// ("vcpus", "boot.kernel", `memory[1] "ram1"`), Msg says what is wrong and,
// where it helps, what to write instead.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Validate checks the config for consistency without touching the host (no
// file is opened or stat'ed). It returns every problem at once, joined with
// errors.Join; each one is a *FieldError.
func (v *VM) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}

	switch {
	case v.Name == "":
		bad("name", "missing; set e.g. name = \"demo\"")
	case !nameRE.MatchString(v.Name):
		bad("name", "%q must match %s (lower case letters, digits, '.', '-', '_'; at most 63 bytes; starting with a letter or digit)", v.Name, namePattern)
	}

	// No default: what happens to the guest across a pmvm restart or a host
	// update is the operator's decision, written down, never implied.
	switch v.Mode {
	case "":
		bad("mode", "missing; say what the guest must survive: mode = \"reboot\" (a host kernel update: memory on device-dax or fsdax), \"restart\" (a pmvm restart) or \"none\" (nothing: it lives as long as its pmvm process)")
	case memspec.ModeNone, memspec.ModeReboot, memspec.ModeRestart:
	default:
		bad("mode", "%q is not one of \"none\", \"reboot\", \"restart\"", v.Mode)
	}

	switch {
	case v.VCPUs == 0:
		bad("vcpus", "missing; set vcpus = 1..%d", MaxVCPUs)
	case v.VCPUs < 1 || v.VCPUs > MaxVCPUs:
		bad("vcpus", "%d is out of range 1..%d", v.VCPUs, MaxVCPUs)
	}

	// boot
	if v.Boot.Kernel == "" {
		bad("boot.kernel", "missing; set the absolute path of a bzImage")
	} else if msg := checkPath(v.Boot.Kernel); msg != "" {
		bad("boot.kernel", "%s", msg)
	}
	if v.Boot.Initrd != "" {
		if msg := checkPath(v.Boot.Initrd); msg != "" {
			bad("boot.initrd", "%s", msg)
		}
	}
	if len(v.Boot.Cmdline) > MaxCmdline {
		bad("boot.cmdline", "%d bytes long; the kernel accepts at most %d", len(v.Boot.Cmdline), MaxCmdline)
	}
	if strings.IndexByte(v.Boot.Cmdline, 0) >= 0 {
		bad("boot.cmdline", "contains a NUL byte")
	}

	// memory
	if len(v.Memory) == 0 {
		bad("memory", "no [[memory]] block; add one, e.g. name = \"ram0\", size = \"512MiB\", backing = \"anonymous\"")
	}
	names := map[string]int{}
	backings := map[string]int{}
	var total uint64
	overflow := false
	for i := range v.Memory {
		m := &v.Memory[i]
		field := fmt.Sprintf("memory[%d]", i)
		if m.Name != "" {
			field += fmt.Sprintf(" %q", m.Name)
		}
		switch {
		case m.Name == "":
			bad(field, "name missing; set e.g. name = \"ram%d\"", i)
		case !blockRE.MatchString(m.Name) || len(m.Name) > maxNameLen:
			bad(field, "name must match %s and be at most %d bytes", blockPattern, maxNameLen)
		default:
			if j, dup := names[m.Name]; dup {
				bad(field, "name already used by memory[%d]; block names must be unique", j)
			} else {
				names[m.Name] = i
			}
		}

		switch {
		case m.Size == 0:
			bad(field, "size missing or zero; set e.g. size = \"512MiB\"")
		case uint64(m.Size)%MemoryAlign != 0:
			bad(field, "size %s is not a multiple of %s", m.Size, Size(MemoryAlign))
		}
		if total+uint64(m.Size) < total {
			overflow = true
		}
		total += uint64(m.Size)

		switch {
		case m.Backing == "":
			bad(field, "backing missing; set \"anonymous\", \"memfd\" or the absolute path of a file or device")
		case m.Backing == memspec.BackingAnonymous || m.Backing == memspec.BackingMemfd:
			if m.Create {
				bad(field, "create = true applies to file backings only, not %q", m.Backing)
			}
		default:
			if msg := checkPath(m.Backing); msg != "" {
				bad(field, "backing %s (or use \"anonymous\" or \"memfd\")", msg)
				break
			}
			if j, dup := backings[m.Backing]; dup {
				bad(field, "backing %s is already used by memory[%d]; two blocks must not map the same file", m.Backing, j)
			} else {
				backings[m.Backing] = i
			}
		}
		if (m.IsFile() || m.Backing == memspec.BackingMemfd) && !m.Shared {
			bad(field, "a %s backing must be mapped shared (or guest writes would not reach it); set shared = true", backingKind(m))
		}
		if m.PreservedAcrossKexec && (m.Backing == memspec.BackingAnonymous || m.Backing == memspec.BackingMemfd) {
			bad(field, "preserved_across_kexec = true applies to files on tmpfs or /dev/shm only, not %q", m.Backing)
		}
		// Whether the backing survives what the mode needs is pmem's
		// judgement (pmem.Check): it depends on the backing, not the config.
	}
	if len(v.Memory) > 0 {
		switch {
		case overflow || total > MaxMemory:
			bad("memory", "total %s is more than the maximum %s", sizeOrHuge(total, overflow), Size(MaxMemory))
		case total < MinMemory:
			bad("memory", "total %s is less than the minimum %s", Size(total), Size(MinMemory))
		}
	}

	// console
	switch v.Console.Output {
	case "", ConsoleStdout, ConsoleNone:
		if v.Console.Path != "" {
			bad("console.path", "set but console.output is %q; path is used only with output = \"file\"", v.Console.outputOrDefault())
		}
	case ConsoleFile:
		if v.Console.Path == "" {
			bad("console.path", "missing; output = \"file\" needs path = \"/absolute/file\"")
		} else if msg := checkPath(v.Console.Path); msg != "" {
			bad("console.path", "%s", msg)
		}
	default:
		bad("console.output", "%q is not one of \"stdout\", \"file\", \"none\"", v.Console.Output)
	}
	switch {
	case v.Console.MaxSize != 0 && v.Console.Output != ConsoleFile:
		bad("console.max_size", "set but console.output is %q; max_size caps the file of output = \"file\"", v.Console.outputOrDefault())
	case v.Console.MaxSize != 0 && v.Console.MaxSize < MinConsoleMaxSize:
		bad("console.max_size", "%s is less than the minimum %s", v.Console.MaxSize, Size(MinConsoleMaxSize))
	}

	// sockets
	sockets := []struct{ field, path string }{
		{"agent.socket", v.Agent.Socket},
		{"control.socket", v.Control.Socket},
	}
	seen := map[string]string{}
	if v.Console.Output == ConsoleFile && v.Console.Path != "" {
		seen[v.Console.Path] = "console.path"
	}
	for p, i := range backings {
		seen[p] = fmt.Sprintf("memory[%d].backing", i)
	}
	for _, s := range sockets {
		switch {
		case s.path == "":
			bad(s.field, "missing; set the absolute path of a unix socket")
			continue
		case checkPath(s.path) != "":
			bad(s.field, "%s", checkPath(s.path))
			continue
		case len(s.path) > MaxSocketPath:
			bad(s.field, "%q is %d bytes long; a unix socket path has at most %d", s.path, len(s.path), MaxSocketPath)
		}
		if other, dup := seen[s.path]; dup {
			bad(s.field, "%s is also %s; every socket and file must have its own path", s.path, other)
		} else {
			seen[s.path] = s.field
		}
	}
	v.validateLimits(bad)
	return errors.Join(errs...)
}

func (c *Console) outputOrDefault() ConsoleOutput {
	if c.Output == "" {
		return ConsoleStdout
	}
	return c.Output
}

func backingKind(m *Memory) string {
	if m.Backing == memspec.BackingMemfd {
		return "memfd"
	}
	return "file"
}

func sizeOrHuge(total uint64, overflow bool) string {
	if overflow {
		return "(more than 2^64 bytes)"
	}
	return Size(total).String()
}

// checkPath returns "" for an absolute, clean path without NUL bytes, or
// what is wrong with it.
func checkPath(p string) string {
	switch {
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Sprintf("%q contains a NUL byte", p)
	case !filepath.IsAbs(p):
		return fmt.Sprintf("%q is not an absolute path", p)
	case filepath.Clean(p) != p:
		return fmt.Sprintf("%q is not in clean form; write %q", p, filepath.Clean(p))
	}
	return ""
}
