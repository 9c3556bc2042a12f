// Package pmem maps guest RAM backings: anonymous memory, memfd and shared
// files (tmpfs, /dev/shm, any regular file). Later: device-dax, fsdax and
// hugetlbfs, and the classification of each backing by what it survives
// (host kexec, VMM restart, nothing).
//
// The rule that matters most: an existing backing file holds a guest's RAM,
// so pmem never truncates, zeroes or resizes it. A size mismatch is refused
// with both sizes and what to do.
package pmem

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// Kind is what backs a Region.
type Kind string

const (
	KindAnonymous Kind = "anonymous" // private to the process: MAP_ANONYMOUS
	KindMemfd     Kind = "memfd"     // an anonymous file (memfd_create); survives exec if the fd is inherited
	KindFile      Kind = "file"      // a regular file on any filesystem (tmpfs, /dev/shm, ext4, ...)
	// Later: "devdax" (/dev/daxX.Y), "fsdax" (a file on a DAX filesystem),
	// "hugetlbfs" (a file on hugetlbfs); each may change Align.
)

// Special values of Spec.Backing; anything else is the absolute path of a file.
const (
	BackingAnonymous = "anonymous"
	BackingMemfd     = "memfd"
)

// DefaultAlign is the size granularity and host-virtual alignment of every
// Region today: 2 MiB lets KVM map guest RAM with huge pages. Backings with
// larger pages (1 GiB hugetlbfs, devdax) will raise it.
const DefaultAlign = 2 << 20

// ErrSizeMismatch is wrapped by Open's error when an existing backing file
// is not exactly Spec.Size bytes.
var ErrSizeMismatch = errors.New("backing size differs from the configured size")

// Spec says what to map: one memory block of the VM config.
type Spec struct {
	Name    string // the memory block name, for messages (e.g. "ram0")
	Size    uint64 // bytes; a multiple of DefaultAlign
	Backing string // BackingAnonymous, BackingMemfd or an absolute path
	Shared  bool   // MAP_SHARED; required for memfd and file backings
	Create  bool   // create a missing file (file backings only); never truncates
}

// Region is one mapped backing. It owns its mapping and its file; Close
// releases both. Mem must not be used after, or concurrently with, Close.
type Region struct {
	Name  string
	Kind  Kind
	Path  string // the backing file; "" for anonymous and memfd
	Size  uint64
	Align uint64 // Addr() and Size are multiples of Align
	Mem   []byte // the mapping; len(Mem) == Size; nil after Close

	// file is kept as *os.File, never as a bare fd: dropping the *os.File
	// would let its finalizer close the descriptor under us.
	file *os.File
	addr uintptr

	mu     sync.Mutex // guards closed (and the teardown in Close)
	closed bool
}

// Addr is the host virtual address of the mapping, for
// KVM_SET_USER_MEMORY_REGION. It is a multiple of Align; 0 after Close.
func (r *Region) Addr() uintptr { return r.addr }

// File is the open backing file (memfd included), or nil for anonymous
// memory. The Region owns it: do not Close it.
func (r *Region) File() *os.File { return r.file }

// String describes the region for logs, e.g. `ram0: file /dev/shm/x 512MiB`.
func (r *Region) String() string {
	s := r.Name + ": " + string(r.Kind)
	if r.Path != "" {
		s += " " + r.Path
	}
	return s + " " + formatSize(r.Size)
}

// Close unmaps the memory and closes the backing file. It is idempotent:
// later calls return nil. The backing file itself is left as it is.
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
	if r.file != nil {
		if err := r.file.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: close: %w", r.what(), err))
		}
	}
	return errors.Join(errs...)
}

func (r *Region) what() string { return describe(r.Name, r.Kind, r.Path) }

// Open maps the backing that spec describes. Errors name the block and its
// backing, and say what to do.
func Open(spec Spec) (*Region, error) {
	if err := spec.check(); err != nil {
		return nil, err
	}
	switch spec.Backing {
	case BackingAnonymous:
		return openAnonymous(spec)
	case BackingMemfd:
		return openMemfd(spec)
	default:
		return openFile(spec)
	}
}

func (s *Spec) kind() Kind {
	switch s.Backing {
	case BackingAnonymous:
		return KindAnonymous
	case BackingMemfd:
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

// errorf makes an error that starts with the block and its backing.
func (s *Spec) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: "+format, append([]any{describe(s.Name, s.kind(), s.path())}, args...)...)
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

// describe: `memory "ram0" (anonymous)` or `memory "ram0" (file /dev/shm/x)`.
func describe(name string, kind Kind, path string) string {
	if path != "" {
		return fmt.Sprintf("memory %q (%s %s)", name, kind, path)
	}
	return fmt.Sprintf("memory %q (%s)", name, kind)
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
		return s.errorf("size %s is not a multiple of %s", formatSize(s.Size), formatSize(DefaultAlign))
	case s.Size > math.MaxInt64/2:
		return s.errorf("size %s is too large", formatSize(s.Size))
	}
	switch s.kind() {
	case KindAnonymous, KindMemfd:
		if s.Create {
			return s.errorf("create = true applies to file backings only")
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

// formatSize writes n with the largest binary unit dividing it exactly, in
// a form both the config and truncate -s accept ("512MiB", "3GiB").
func formatSize(n uint64) string {
	if n != 0 {
		for _, u := range []struct {
			name string
			mult uint64
		}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
			if n%u.mult == 0 {
				return strconv.FormatUint(n/u.mult, 10) + u.name
			}
		}
	}
	return strconv.FormatUint(n, 10)
}
