package configs

// The host config (/etc/pmvm/host.toml) drives a host kernel update: where
// the VM configs and state files live, the hooks run around the update and
// the cgroup limits applied to every VM restored after it. It is decoded as
// strictly as a VM config (an unknown key is an error naming the key and its
// line) and validated the same way: every problem at once, each one a
// *FieldError naming the field. Every key has a default, so an empty file
// is a valid host config.

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// Defaults of the host config.
const (
	DefaultHostConfig     = "/etc/pmvm/host.toml"
	DefaultVMDir          = "/etc/pmvm/vms"
	DefaultStateDir       = "/var/lib/pmvm/state"
	DefaultHostRuntimeDir = "/run/pmvm"
	DefaultLogDir         = "/var/log/pmvm"

	DefaultHookTimeout    = 30 * time.Second
	DefaultSaveTimeout    = 2 * time.Minute
	DefaultRestoreTimeout = 2 * time.Minute

	// MaxSaveTimeout is the most a save may be given: the control socket
	// caps every command at 10 minutes.
	MaxSaveTimeout = 10 * time.Minute
	// MaxHookTimeout and MaxRestoreTimeout bound the other waits.
	MaxHookTimeout    = time.Hour
	MaxRestoreTimeout = time.Hour

	// MaxCPUWeight is cgroup v2's cpu.weight range 1..10000 (100 is the
	// kernel's default).
	MaxCPUWeight = 10000
	// MinVMMMemoryOverhead is the least vmm_memory_overhead accepted: the
	// VMM's own memory (Go runtime, KVM structures, buffers) besides the
	// guest's RAM.
	MinVMMMemoryOverhead = 32 * memspec.MiB
)

// Host is the host config: the top level of host.toml.
type Host struct {
	// VMDir holds one VM config per *.toml file. Every VM whose config is
	// there and whose control socket answers is carried over a host update.
	VMDir string `toml:"vm_dir"`
	// StateDir receives the state files (<name>.state) and the update
	// timeline. It must be on storage that survives the kexec: a disk
	// filesystem, never tmpfs (/run, /dev/shm) nor /tmp (cleaned at boot).
	StateDir string `toml:"state_dir"`
	// RuntimeDir is pmvm's runtime directory (the host update lock; the
	// default parent of VM sockets, passed to restored VMs as
	// PMVM_RUNTIME_DIR).
	RuntimeDir string `toml:"runtime_dir"`
	// LogDir receives host.log (the update and restore log) and, for each
	// restored VM, <name>.log (its pmvm run's log) and, when its console
	// goes to stdout, <name>.console.log.
	LogDir string `toml:"log_dir"`
	// SaveTimeout bounds one VM's suspend and save; RestoreTimeout bounds
	// the wait for a restored VM to run again.
	SaveTimeout    Duration `toml:"save_timeout"`
	RestoreTimeout Duration `toml:"restore_timeout"`
	Hooks          Hooks    `toml:"hooks"`
	Limits         Limits   `toml:"limits"`
}

// Hooks are the commands run around a host update. A hook that is not set
// is skipped.
type Hooks struct {
	PreSave     *Hook `toml:"pre-save"`     // before any VM is suspended; failing aborts the update
	PreKexec    *Hook `toml:"pre-kexec"`    // after every VM is saved and the kernel loaded; failing rolls back
	PostRestore *Hook `toml:"post-restore"` // after each VM runs again at boot (once per VM)
	OnFailure   *Hook `toml:"on-failure"`   // when an update is aborted or rolled back
}

// Hook phases, as named in the config and in PMVM_PHASE.
const (
	PhasePreSave     = "pre-save"
	PhasePreKexec    = "pre-kexec"
	PhasePostRestore = "post-restore"
	PhaseOnFailure   = "on-failure"
)

// Phases lists the hook phases in the order an update meets them.
var Phases = []string{PhasePreSave, PhasePreKexec, PhasePostRestore, PhaseOnFailure}

// Get returns the hook of phase, or nil when it is not set.
func (h *Hooks) Get(phase string) *Hook {
	switch phase {
	case PhasePreSave:
		return h.PreSave
	case PhasePreKexec:
		return h.PreKexec
	case PhasePostRestore:
		return h.PostRestore
	case PhaseOnFailure:
		return h.OnFailure
	}
	return nil
}

// Hook is one command: argv (no shell; command[0] is an absolute path) and
// how long it may run before its whole process group is killed.
type Hook struct {
	Command []string `toml:"command"`
	Timeout Duration `toml:"timeout"` // default DefaultHookTimeout
}

// Limits are the host's [limits]: whether each VM's pmvm process runs in a
// cgroup of its own (after pmvm run starts it, and after a restore), where,
// and the default limits of VMs whose config leaves them out.
type Limits struct {
	// Cgroups: false runs VMs in the cgroup pmvm was started in, without
	// limits. Default true.
	Cgroups *bool `toml:"cgroups"`
	// CgroupParent is where VM cgroups are created: an absolute path is
	// from the root of each hierarchy (default "/pmvm.slice" on cgroup v2,
	// "/pmvm" on v1); a relative one is under the cgroup pmvm itself runs
	// in (e.g. a systemd service with Delegate=yes).
	CgroupParent string `toml:"cgroup_parent"`
	// VMLimits (cpu_weight, vmm_memory_overhead, pids) are the defaults; a
	// VM config's [limits] overrides each one it sets.
	VMLimits
}

// CgroupsEnabled reports whether VMs get cgroups of their own.
func (l *Limits) CgroupsEnabled() bool { return l.Cgroups == nil || *l.Cgroups }

// Duration is a length of time written as a Go duration string ("30s",
// "2m30s"). A bare TOML integer is refused: it would be nanoseconds.
type Duration struct{ d time.Duration }

// NewDuration returns d as a config Duration.
func NewDuration(d time.Duration) Duration { return Duration{d} }

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return d.d }

// String formats the duration as time.Duration does.
func (d Duration) String() string { return d.d.String() }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	if _, err := strconv.ParseFloat(string(b), 64); err == nil {
		// go-toml hands a bare TOML number here as its text.
		return fmt.Errorf("the number %s is not a duration (it would be nanoseconds): write a string with a unit, e.g. \"30s\"", string(b))
	}
	v, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("duration %q: write e.g. \"30s\", \"2m\" or \"1m30s\"", string(b))
	}
	if v <= 0 {
		return fmt.Errorf("duration %q: must be positive", string(b))
	}
	d.d = v
	return nil
}

// setDefaults fills what the file left out.
func (h *Host) setDefaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&h.VMDir, DefaultVMDir)
	def(&h.StateDir, DefaultStateDir)
	def(&h.RuntimeDir, DefaultHostRuntimeDir)
	def(&h.LogDir, DefaultLogDir)
	if h.SaveTimeout.d == 0 {
		h.SaveTimeout.d = DefaultSaveTimeout
	}
	if h.RestoreTimeout.d == 0 {
		h.RestoreTimeout.d = DefaultRestoreTimeout
	}
	for _, p := range Phases {
		if hk := h.Hooks.Get(p); hk != nil && hk.Timeout.d == 0 {
			hk.Timeout.d = DefaultHookTimeout
		}
	}
}

// DefaultHost is the host config of an empty host.toml.
func DefaultHost() *Host {
	h := &Host{}
	h.setDefaults()
	return h
}

// LoadHost reads, decodes and validates the host config at path, and
// checks that only root (or the user pmvm runs as) can change it or what
// it points to (CheckTrust). Every error starts with path.
func LoadHost(path string) (*Host, error) {
	h, err := load(path, "host config", DecodeHost)
	if err != nil {
		return nil, err
	}
	if err := h.CheckTrust(path); err != nil {
		return nil, prefixEach(path, err)
	}
	return h, nil
}

// DecodeHost strictly decodes a host config from r and applies defaults; it
// does not validate. Errors are *FileError values as for Decode.
func DecodeHost(name string, r io.Reader) (*Host, error) {
	if name == "" {
		name = "<host config>"
	}
	var h Host
	dec := toml.NewDecoder(r).DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, decodeError(name, err, hostTypes)
	}
	h.setDefaults()
	return &h, nil
}

// hostTypes are the host config's field types as friendlyMessage words them.
var hostTypes = map[string]string{
	"string":           "a string",
	"int64":            "an integer",
	"uint64":           "a whole number",
	"*bool":            "true or false",
	"bool":             "true or false",
	"configs.Size":     `a size (e.g. "256MiB" or a number of bytes)`,
	"configs.Duration": `a duration string (e.g. "30s")`,
	"[]string":         `an array of strings (e.g. ["/usr/local/sbin/hook", "arg"])`,
	"*configs.Hook":    "a table with command = [...] and timeout = \"30s\"",
}

// volatileDirs are where state must never go: tmpfs or cleaned at boot.
var volatileDirs = []string{"/run", "/var/run", "/dev", "/tmp", "/proc", "/sys"}

// Validate checks the host config without touching the host. It returns
// every problem at once, joined with errors.Join; each is a *FieldError.
// Whether state_dir really is on storage that survives a kexec (not tmpfs)
// is checked by the update plan, which looks at the filesystem.
func (h *Host) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	for _, d := range []struct{ field, path string }{
		{"vm_dir", h.VMDir}, {"state_dir", h.StateDir}, {"runtime_dir", h.RuntimeDir}, {"log_dir", h.LogDir},
	} {
		if d.path == "" {
			bad(d.field, "empty; remove the key for the default or set an absolute directory")
		} else if msg := checkPath(d.path); msg != "" {
			bad(d.field, "%s", msg)
		}
	}
	if checkPath(h.StateDir) == "" {
		for _, v := range volatileDirs {
			if under(h.StateDir, v) {
				bad("state_dir", "%s is under %s, which does not survive a reboot or kexec (tmpfs, or cleaned at boot); state files must be on a disk filesystem, e.g. %s", h.StateDir, v, DefaultStateDir)
				break
			}
		}
	}
	if h.StateDir != "" && h.StateDir == h.VMDir {
		bad("state_dir", "is the same directory as vm_dir; keep configs and state files apart")
	}
	// pmvm's NAME convention puts sockets at runtime_dir/NAME/control.sock.
	if len(h.RuntimeDir)+len("/x/control.sock") > MaxSocketPath {
		bad("runtime_dir", "%q is too long: runtime_dir/NAME/control.sock must fit in %d bytes", h.RuntimeDir, MaxSocketPath)
	}

	checkTimeout := func(field string, d Duration, max time.Duration) {
		if d.d <= 0 {
			bad(field, "must be positive")
		} else if d.d > max {
			bad(field, "%s is more than the maximum %s", d.d, max)
		}
	}
	checkTimeout("save_timeout", h.SaveTimeout, MaxSaveTimeout)
	checkTimeout("restore_timeout", h.RestoreTimeout, MaxRestoreTimeout)

	for _, p := range Phases {
		hk := h.Hooks.Get(p)
		if hk == nil {
			continue
		}
		field := "hooks." + p
		switch {
		case len(hk.Command) == 0:
			bad(field+".command", "missing; set command = [\"/absolute/program\", \"arg\", ...] or remove [%s]", field)
		case hk.Command[0] == "" || !filepath.IsAbs(hk.Command[0]):
			bad(field+".command", "the program %q must be an absolute path (hooks run at boot with a minimal PATH; no shell is involved)", hk.Command[0])
		}
		for i, a := range hk.Command {
			if strings.IndexByte(a, 0) >= 0 {
				bad(fmt.Sprintf("%s.command[%d]", field, i), "contains a NUL byte")
			}
		}
		checkTimeout(field+".timeout", hk.Timeout, MaxHookTimeout)
	}

	l := &h.Limits
	l.VMLimits.validate(bad)
	if p := l.CgroupParent; p != "" {
		rel := strings.TrimPrefix(p, "/")
		switch {
		case strings.IndexByte(p, 0) >= 0:
			bad("limits.cgroup_parent", "contains a NUL byte")
		case rel == "" || filepath.Clean(rel) != rel || strings.HasPrefix(rel, "..") || strings.Contains(rel, "/../"):
			bad("limits.cgroup_parent", "%q must be a clean cgroup path without \"..\" (e.g. \"/pmvm\" or \"pmvm\")", p)
		}
	}
	return errors.Join(errs...)
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// StatePath is where VM name's state file goes: state_dir/<name>.state.
func (h *Host) StatePath(name string) string {
	return filepath.Join(h.StateDir, name+".state")
}

// TimelinePath is the update timeline file, state_dir/update-timeline.json.
func (h *Host) TimelinePath() string {
	return filepath.Join(h.StateDir, "update-timeline.json")
}
