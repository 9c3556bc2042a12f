package seccomp

import (
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Install confines this process, every thread of it, to Allowed for the
// rest of its life, and returns how long that took.
func Install() (time.Duration, error) {
	start := time.Now()
	raw, err := Program(Allowed)
	if err != nil {
		return 0, err
	}
	if err := load(raw); err != nil {
		return 0, fmt.Errorf("seccomp: %w; run pmvm with --seccomp=false to go without a filter", err)
	}
	return time.Since(start), nil
}

func load(raw []bpf.RawInstruction) error {
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	// Without no_new_privs an unprivileged process may not install a
	// filter; pmvm run never execs, so it loses nothing.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	// TSYNC: every thread the Go runtime has started gets the filter too.
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	switch {
	case errno != 0:
		return fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER): %w", errno)
	case r != 0:
		return fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER): thread %d could not take the filter", r)
	}
	return nil
}
