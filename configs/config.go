// Package configs is the VM configuration: the TOML schema as Go types,
// strict decoding (an unknown key is an error naming the key and its line),
// validation that reports every problem at once, and the example files in
// configs/examples.
//
// Decoding never touches the host: Validate checks the config for internal
// consistency only. Whether a kernel or a backing file exists, and whether a
// memory backing survives what the mode needs (a host kexec, a VMM restart),
// is checked by the VMM through package pmem (pmem.Check), which looks at
// the backing itself.
package configs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// ConsoleOutput is where the serial console (COM1) goes.
type ConsoleOutput string

const (
	ConsoleStdout ConsoleOutput = "stdout" // the default
	ConsoleFile   ConsoleOutput = "file"   // appended to Console.Path
	ConsoleNone   ConsoleOutput = "none"   // discarded
)

// VM is one virtual machine's configuration: the top level of the TOML file.
type VM struct {
	Name string `toml:"name"`
	// Mode says what the VM must survive; required (Validate). Whether each
	// memory block's backing can honour it is decided by package pmem
	// (pmem.Check), which looks at the backing itself: Validate does not
	// judge it, so that `pmvm check` can show every block's class and verdict.
	Mode    memspec.Mode `toml:"mode"`
	VCPUs   int          `toml:"vcpus"` // 1..MaxVCPUs
	Boot    Boot         `toml:"boot"`
	Memory  []Memory     `toml:"memory"` // laid out in this order from guest-physical 0
	Console Console      `toml:"console"`
	Agent   Agent        `toml:"agent"`
	Control Control      `toml:"control"`
	// Limits are this VM's cgroup limits; each one left out (zero) is the
	// host config's [limits] default.
	Limits VMLimits `toml:"limits"`
}

// VMLimits are the limits of one VM's cgroup, in a VM config's [limits]
// and, as defaults for every VM, in the host config's. Zero leaves a limit
// unset.
type VMLimits struct {
	// CPUWeight is the cgroup v2 cpu.weight, 1..10000 (100 is the kernel's
	// default). On cgroup v1 it becomes cpu.shares = weight * 1024 / 100.
	CPUWeight uint64 `toml:"cpu_weight"`
	// VMMMemoryOverhead, when set, limits the VM's memory to its guest RAM
	// plus this much (memory.max / memory.limit_in_bytes). Whether guest RAM
	// is charged at all depends on its backing: tmpfs and memfd pages are
	// charged to the cgroup that first touched them, device-dax and fsdax
	// are not page cache and are not charged, hugetlbfs pages go to the
	// hugetlb controller. The limit is therefore an upper bound.
	VMMMemoryOverhead Size `toml:"vmm_memory_overhead"`
	// Pids is pids.max: tasks, i.e. threads. pmvm runs one thread per vCPU
	// plus PidsHeadroom of its own.
	Pids int64 `toml:"pids"`
}

// PidsHeadroom is the threads pmvm needs besides one per vCPU (the Go
// runtime, the control and agent sockets, blocking syscalls).
const PidsHeadroom = 64

// MinPids is the least pids limit the VM can run under.
func (v *VM) MinPids() int64 { return int64(v.VCPUs) + PidsHeadroom }

// Or returns l with every limit it leaves unset taken from def: a VM's own
// value wins over the host config's default.
func (l VMLimits) Or(def VMLimits) VMLimits {
	if l.CPUWeight == 0 {
		l.CPUWeight = def.CPUWeight
	}
	if l.VMMMemoryOverhead == 0 {
		l.VMMMemoryOverhead = def.VMMMemoryOverhead
	}
	if l.Pids == 0 {
		l.Pids = def.Pids
	}
	return l
}

// validate checks what a VM's and the host's [limits] share.
func (l *VMLimits) validate(bad func(field, format string, args ...any)) {
	if l.CPUWeight > MaxCPUWeight {
		bad("limits.cpu_weight", "%d is out of range 1..%d (100 is the default weight)", l.CPUWeight, MaxCPUWeight)
	}
	if l.Pids < 0 {
		bad("limits.pids", "%d is negative; leave it out for no limit", l.Pids)
	}
	if l.VMMMemoryOverhead != 0 && uint64(l.VMMMemoryOverhead) < MinVMMMemoryOverhead {
		bad("limits.vmm_memory_overhead", "%s is less than the minimum %s: pmvm needs memory of its own besides guest RAM", l.VMMMemoryOverhead, Size(MinVMMMemoryOverhead))
	}
}

// validateLimits checks the VM's [limits]; unlike the host's defaults, its
// pids can be held to its vCPUs.
func (v *VM) validateLimits(bad func(field, format string, args ...any)) {
	v.Limits.validate(bad)
	if p := v.Limits.Pids; p > 0 && v.VCPUs >= 1 && v.VCPUs <= MaxVCPUs && p < v.MinPids() {
		bad("limits.pids", "%d is too low for %d vCPU(s): pmvm needs at least %d (one thread per vCPU and %d of its own)", p, v.VCPUs, v.MinPids(), PidsHeadroom)
	}
}

// Boot is how the guest kernel is started.
type Boot struct {
	Kernel  string `toml:"kernel"`  // absolute path of a bzImage
	Initrd  string `toml:"initrd"`  // optional absolute path
	Cmdline string `toml:"cmdline"` // kernel command line
}

// Memory is one block of guest RAM and what backs it.
type Memory struct {
	// Name is unique within the VM; it keys the block's state section
	// ("memory/<name>"), so renaming a block is a config change.
	Name string `toml:"name"`
	// Size in bytes, a multiple of 2 MiB.
	Size Size `toml:"size"`
	// Backing is memspec.BackingAnonymous, memspec.BackingMemfd or the
	// absolute path of a file (tmpfs, /dev/shm, hugetlbfs, fsdax) or a
	// device (/dev/daxX.Y).
	Backing string `toml:"backing"`
	// Shared maps the block MAP_SHARED. Required for file and memfd backings.
	Shared bool `toml:"shared"`
	// Create creates a missing backing file (never truncating an existing
	// one). File backings only.
	Create bool `toml:"create"`
	// PreservedAcrossKexec declares that this tmpfs or /dev/shm file
	// survives a host kexec on this host (PKRAM, Linux Live Update memfd
	// preservation): an explicit opt-in that lets it serve mode = "reboot".
	// File backings only; pmvm refuses it on anything but tmpfs and logs it.
	PreservedAcrossKexec bool `toml:"preserved_across_kexec"`
}

// IsFile reports whether the backing is a path (not anonymous or memfd).
func (m *Memory) IsFile() bool {
	return memspec.IsPathBacking(m.Backing)
}

// Console is the serial console (COM1).
type Console struct {
	Output ConsoleOutput `toml:"output"` // "" means ConsoleStdout
	Path   string        `toml:"path"`   // required iff Output is ConsoleFile
	// MaxSize caps the file of output = "file": when it would grow past
	// it, the file is moved to <path>.1 (replacing the previous one) and a
	// new one started, so the console takes at most twice MaxSize on disk.
	// Zero means DefaultConsoleMaxSize.
	MaxSize Size `toml:"max_size"`
}

// DefaultConsoleMaxSize is console.max_size when the config leaves it out.
const DefaultConsoleMaxSize = 64 << 20

// MinConsoleMaxSize is the smallest console.max_size accepted.
const MinConsoleMaxSize = 64 << 10

// MaxSizeOrDefault is MaxSize, or DefaultConsoleMaxSize when it is not set.
func (c Console) MaxSizeOrDefault() uint64 {
	if c.MaxSize == 0 {
		return DefaultConsoleMaxSize
	}
	return c.MaxSize.Bytes()
}

// Agent is the qemu-guest-agent line (COM2), exposed on a unix socket.
type Agent struct {
	Socket string `toml:"socket"`
}

// Control is the VMM's control socket.
type Control struct {
	Socket string `toml:"socket"`
}

// TotalMemory is the sum of all memory block sizes, saturating at
// math.MaxUint64 (Validate refuses anything above MaxMemory).
func (v *VM) TotalMemory() uint64 {
	var total uint64
	for _, m := range v.Memory {
		if total+uint64(m.Size) < total {
			return ^uint64(0)
		}
		total += uint64(m.Size)
	}
	return total
}

// RunMode returns the mode. Validate requires one; a VM built in code
// without one (tests) runs as memspec.ModeNone.
func (v *VM) RunMode() memspec.Mode { return v.Mode.OrDefault() }

// setDefaults fills the optional fields the TOML file left out (mode is
// not optional).
func (v *VM) setDefaults() {
	if v.Console.Output == "" {
		v.Console.Output = ConsoleStdout
	}
}

// Load reads, decodes and validates the config file at path. Every error
// (syntax, unknown key, each validation problem) starts with path.
func Load(path string) (*VM, error) { return load(path, "config", Decode) }

// load opens path, decodes it with decode and validates the result; every
// validation problem is prefixed with path. what names the file in errors.
func load[T interface{ Validate() error }](path, what string, decode func(string, io.Reader) (T, error)) (T, error) {
	var zero T
	f, err := os.Open(path)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	v, err := decode(path, f)
	if err != nil {
		return zero, err
	}
	if err := v.Validate(); err != nil {
		return zero, prefixEach(path, err)
	}
	return v, nil
}

// Decode strictly decodes a TOML config from r and applies defaults; it does
// not validate. name (usually the file path) prefixes every error. Syntax
// and type errors come back as *FileError ("name:line:col: message"); each
// unknown key as a *FileError ("name:line: unknown key "k" in [table]"),
// joined with errors.Join when there are several.
func Decode(name string, r io.Reader) (*VM, error) {
	if name == "" {
		name = "<config>"
	}
	var v VM
	dec := toml.NewDecoder(r).DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return nil, decodeError(name, err, vmTypes)
	}
	v.setDefaults()
	return &v, nil
}

// FileError is a problem at a position in a config file. Col is 0 when only
// the line is known.
type FileError struct {
	File string
	Line int
	Col  int
	Key  []string // the TOML key involved, when known
	Msg  string
	err  error
}

func (e *FileError) Error() string {
	if e.Col > 0 {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Unwrap returns the go-toml error this one was made from.
func (e *FileError) Unwrap() error { return e.err }

// decodeError turns go-toml's errors into *FileError values naming the
// file, line and key; types words the type mismatches.
func decodeError(name string, err error, types map[string]string) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		errs := make([]error, 0, len(strict.Errors))
		for i := range strict.Errors {
			de := &strict.Errors[i]
			line, _ := de.Position()
			errs = append(errs, &FileError{
				File: name, Line: line, Key: de.Key(),
				Msg: unknownKeyMessage(de),
				err: de,
			})
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		return &FileError{
			File: name, Line: line, Col: col, Key: de.Key(),
			Msg: friendlyMessage(de, types),
			err: de,
		}
	}
	return fmt.Errorf("%s: %w", name, err)
}

// vmTypes are a VM config's field types as friendlyMessage words them.
var vmTypes = map[string]string{
	"string":                "a string",
	"int":                   "an integer",
	"int64":                 "an integer",
	"uint64":                "a whole number",
	"bool":                  "true or false",
	"configs.Size":          `a size (e.g. "512MiB" or a number of bytes)`,
	"memspec.Mode":          "a string",
	"configs.ConsoleOutput": "a string",
	"[]configs.Memory":      "[[memory]] blocks",
}

var mismatchRE = regexp.MustCompile(`^cannot decode TOML (.+?) into (?:struct field \S+ of type )?(\S+)$`)

// friendlyMessage rewrites go-toml's type mismatch ("cannot decode TOML
// integer into struct field configs.VM.Name of type string") in terms of the
// config: `name: expected a string, not an integer`. types says how each
// Go type reads in the file (vmTypes, hostTypes).
func friendlyMessage(de *toml.DecodeError, types map[string]string) string {
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	m := mismatchRE.FindStringSubmatch(msg)
	if m == nil {
		// Name the key unless the message does ("size ...").
		if key := de.Key(); len(key) > 0 && !strings.Contains(msg, key[len(key)-1]) {
			return strings.Join(key, ".") + ": " + msg
		}
		return msg
	}
	want, ok := types[m[2]]
	if !ok {
		want = "a table"
	}
	got := m[1]
	switch got {
	case "integer", "inline table", "array":
		got = "an " + got
	default:
		got = "a " + got
	}
	if key := de.Key(); len(key) > 0 {
		return fmt.Sprintf("%s: expected %s, not %s", strings.Join(key, "."), want, got)
	}
	return fmt.Sprintf("expected %s, not %s", want, got)
}

// unknownKeyMessage turns go-toml's "unknown field"/"missing table" into
// `unknown key "vcpu" in [machine]`.
func unknownKeyMessage(de *toml.DecodeError) string {
	key := de.Key()
	what := "key"
	if strings.Contains(de.Error(), "table") {
		what = "table"
	}
	if len(key) == 0 {
		return "unknown " + what
	}
	last := strconv.Quote(key[len(key)-1])
	if len(key) == 1 {
		if what == "table" {
			return fmt.Sprintf("unknown table [%s]", key[0])
		}
		return fmt.Sprintf("unknown key %s at top level", last)
	}
	parent := "[" + strings.Join(key[:len(key)-1], ".") + "]"
	if arrayTables[parent] {
		parent = "[" + parent + "]"
	}
	if what == "table" {
		return fmt.Sprintf("unknown table %s in %s", last, parent)
	}
	return fmt.Sprintf("unknown key %s in %s", last, parent)
}

// arrayTables are the schema's arrays of tables, shown as [[name]].
var arrayTables = map[string]bool{"[memory]": true}

// prefixEach puts "name: " in front of every error joined in err.
func prefixEach(name string, err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs := j.Unwrap()
		out := make([]error, len(errs))
		for i, e := range errs {
			out[i] = fmt.Errorf("%s: %w", name, e)
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s: %w", name, err)
}
