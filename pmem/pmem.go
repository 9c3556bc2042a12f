// Package pmem maps guest RAM backings and classifies each by what it
// survives: a host kexec (device-dax, a file on a DAX filesystem on
// persistent memory, an explicitly opted-in tmpfs file), a VMM restart only
// (tmpfs and /dev/shm files, hugetlbfs files, memfd), or nothing (anonymous
// memory). Check and Probe look without touching; Open refuses a backing
// that cannot honour the VM's mode, locks it exclusively and maps it.
//
// The rule that matters most: an existing backing holds a guest's RAM, so
// pmem never truncates, zeroes or resizes it, never reads or writes a
// device-dax device except through the mapping, and creates a file only
// when the config says so. A size mismatch is refused with both sizes and
// what to do.
package pmem

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// Kind is what backs a Region.
type Kind string

const (
	KindAnonymous Kind = "anonymous" // private to the process: MAP_ANONYMOUS
	KindMemfd     Kind = "memfd"     // an anonymous file (memfd_create); survives exec if the fd is inherited
	KindTmpfs     Kind = "tmpfs"     // a file on tmpfs (/dev/shm included)
	KindHugetlbfs Kind = "hugetlbfs" // a file on hugetlbfs; Align is the huge page size
	KindFsDax     Kind = "fsdax"     // a file on a DAX filesystem (ext4/xfs -o dax); mapped MAP_SYNC
	KindDevDax    Kind = "devdax"    // a device-dax instance /dev/daxX.Y; the first Size bytes are mapped
	KindFile      Kind = "file"      // a regular file on any other filesystem (ext4, xfs without DAX, ...)
)

// DefaultAlign is the least size granularity and host-virtual alignment of
// every Region: 2 MiB lets KVM map guest RAM with huge pages. Backings with
// larger pages (1 GiB hugetlbfs, a device-dax instance aligned to 1 GiB)
// raise Region.Align to their own.
const DefaultAlign = 2 << 20

// ErrSizeMismatch is wrapped by Open's error when an existing backing file
// is not exactly Spec.Size bytes.
var ErrSizeMismatch = errors.New("backing size differs from the configured size")

// Spec says what to map: one memory block of the VM config.
type Spec struct {
	Name    string // the memory block name, for messages (e.g. "ram0")
	Size    uint64 // bytes; a multiple of DefaultAlign (and of the backing's alignment)
	Backing string // memspec.BackingAnonymous, memspec.BackingMemfd or an absolute path
	Shared  bool   // MAP_SHARED; required for memfd and path backings
	Create  bool   // create a missing file (file backings only); never truncates
	// Mode is what the VM must survive; Open and Check refuse a backing of
	// a lesser class. "" means memspec.ModeNone.
	Mode memspec.Mode
	// PreservedAcrossKexec is the config's explicit opt-in that this tmpfs
	// or /dev/shm file survives a host kexec (PKRAM, Live Update memfd
	// preservation). Refused on any other kind of backing.
	PreservedAcrossKexec bool
	// VM names the VM in the lock record, so that a refused second pmvm
	// can say who holds the memory.
	VM string
	// LockDir is where lock records go; "" means DefaultLockDir.
	LockDir string

	host *host // nil: the real /sys and /proc (tests point it at fixtures)
}

func (s *Spec) hostOrReal() *host {
	if s.host != nil {
		return s.host
	}
	return realHost
}

// Region is one mapped backing. It owns its mapping, its file and the lock
// on it; Close releases all three. Mem must not be used after, or
// concurrently with, Close.
type Region struct {
	Name  string
	Kind  Kind
	Path  string // the backing file or device; "" for anonymous and memfd
	Size  uint64
	Align uint64 // Addr() and Size are multiples of Align
	Mem   []byte // the mapping; len(Mem) == Size; nil after Close
	// Class is what the memory survives; Open refused it if less than the
	// Spec's mode needs.
	Class Class
	// OptIn: SurvivesKexec only because the config said
	// preserved_across_kexec = true. Log it.
	OptIn bool
	// Notes are the probe's facts ("DAX per statx", "uses the first 4GiB
	// of the 8GiB device"), for logs.
	Notes []string

	id Identity

	// file is kept as *os.File, never as a bare fd: dropping the *os.File
	// would let its finalizer close the descriptor (and drop the lock)
	// under us.
	file *os.File
	lock *backingLock
	addr uintptr

	mu     sync.Mutex // guards closed (and the teardown in Close)
	closed bool
}

// Addr is the host virtual address of the mapping, for
// KVM_SET_USER_MEMORY_REGION. It is a multiple of Align; 0 after Close.
func (r *Region) Addr() uintptr { return r.addr }

// File is the open backing file (memfd and device-dax included), or nil for
// anonymous memory. The Region owns it: do not Close it.
func (r *Region) File() *os.File { return r.file }

// Identity is the backing's identity, to record in the state file and
// compare on resume.
func (r *Region) Identity() Identity { return r.id }

// String describes the region for logs, e.g. `ram0: tmpfs /dev/shm/x 512MiB`.
func (r *Region) String() string {
	s := r.Name + ": " + string(r.Kind)
	if r.Path != "" {
		s += " " + r.Path
	}
	return s + " " + memspec.FormatSize(r.Size)
}

// Close unmaps the memory, removes the lock record and closes the backing
// file, which releases the lock. It is idempotent: later calls return nil.
// The backing itself is left as it is.
func (r *Region) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var errs []error
	if r.Mem != nil {
		if err := unmap(r.Mem); err != nil {
			errs = append(errs, fmt.Errorf("%s: munmap: %w", r.what(), err))
		}
	}
	r.Mem, r.addr = nil, 0
	r.lock.release()
	if r.file != nil {
		if err := r.file.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: close: %w", r.what(), err))
		}
	}
	return errors.Join(errs...)
}

func (r *Region) what() string { return describe(r.Name, r.Kind, r.Path) }

// Open maps the backing that spec describes, MAP_SHARED (anonymous memory
// may be private) at a host address aligned to the backing's alignment.
// It refuses a backing that cannot honour spec.Mode, a size or alignment
// that does not fit, and a backing another process holds; a file it would
// create is judged from its directory before it is created. Errors name the
// block and its backing, and say what to do.
//
// An existing file or device is classified once, through the descriptor
// that is then locked and mapped (not through its path, which could name
// other memory by then): callers that need a verdict before opening (the
// VMM refuses a VM before it joins its cgroup) use Check or Verdicts, and
// compare what they planned with the Region.
func Open(spec Spec) (*Region, error) {
	if err := spec.check(); err != nil {
		return nil, err
	}
	if spec.kind() == KindFile {
		return openPath(spec)
	}
	b := describeSpecial(spec)
	if err := finish(spec, b); err != nil {
		return nil, err
	}
	if err := spec.judge(b); err != nil {
		return nil, err
	}
	if spec.kind() == KindMemfd {
		return openMemfd(spec, b)
	}
	return openAnonymous(spec, b)
}

// judge refuses b when it cannot honour spec.Mode.
func (s *Spec) judge(b *Backing) error {
	if why := modeVerdict(s.Mode, b); why != "" {
		return &refusal{msg: s.prefix() + " " + why, cause: ErrModeRefused}
	}
	return nil
}

// kind is the kind as far as the spec alone tells: anonymous, memfd, or
// KindFile for any path (a file or device, classified by Probe).
func (s *Spec) kind() Kind {
	switch s.Backing {
	case memspec.BackingAnonymous:
		return KindAnonymous
	case memspec.BackingMemfd:
		return KindMemfd
	default:
		return KindFile
	}
}

func (s *Spec) path() string {
	if s.kind() == KindFile {
		return s.Backing
	}
	return ""
}

// prefix starts every message about the block: `memory block "ram0" (/dev/dax0.0)`.
func (s *Spec) prefix() string {
	if p := s.path(); p != "" {
		return fmt.Sprintf("memory block %q (%s)", s.Name, p)
	}
	return fmt.Sprintf("memory block %q (%s)", s.Name, s.kind())
}

// errorf makes an error that starts with the block and its backing.
func (s *Spec) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: "+format, append([]any{s.prefix()}, args...)...)
}

// refuse makes an error like errorf whose text does not repeat cause but
// which still matches it with errors.Is (ErrSizeMismatch, fs.ErrNotExist).
func (s *Spec) refuse(cause error, format string, args ...any) error {
	return &refusal{msg: s.errorf(format, args...).Error(), cause: cause}
}

type refusal struct {
	msg   string
	cause error
}

func (e *refusal) Error() string { return e.msg }
func (e *refusal) Unwrap() error { return e.cause }

// describe: `memory block "ram0" (anonymous)` or `memory block "ram0" (tmpfs /dev/shm/x)`.
func describe(name string, kind Kind, path string) string {
	if path != "" {
		return fmt.Sprintf("memory block %q (%s %s)", name, kind, path)
	}
	return fmt.Sprintf("memory block %q (%s)", name, kind)
}

func (s *Spec) check() error {
	if s.Name == "" {
		return fmt.Errorf("pmem: memory block without a name (backing %q)", s.Backing)
	}
	switch {
	case s.Backing == "":
		return s.errorf("no backing; set \"anonymous\", \"memfd\" or an absolute path")
	case s.Size == 0:
		return s.errorf("size is zero")
	case s.Size%DefaultAlign != 0:
		return s.errorf("size %s is not a multiple of %s", memspec.FormatSize(s.Size), memspec.FormatSize(DefaultAlign))
	case s.Size > math.MaxInt64/2:
		return s.errorf("size %s is too large", memspec.FormatSize(s.Size))
	case !s.Mode.Valid():
		return s.errorf("mode %q is not one of \"none\", \"restart\", \"reboot\"", s.Mode)
	}
	switch s.kind() {
	case KindAnonymous, KindMemfd:
		if s.Create {
			return s.errorf("create = true applies to file backings only")
		}
		if s.PreservedAcrossKexec {
			return s.errorf("preserved_across_kexec = true applies to tmpfs or /dev/shm files only")
		}
		if s.kind() == KindMemfd && !s.Shared {
			return s.errorf("a memfd backing must be mapped shared; set shared = true")
		}
	case KindFile:
		if !filepath.IsAbs(s.Backing) {
			return s.errorf("backing is not an absolute path")
		}
		if !s.Shared {
			return s.errorf("a file backing must be mapped shared (or guest writes would not reach the file); set shared = true")
		}
	}
	return nil
}
