// Package seccomp confines a running pmvm to the system calls it needs once
// its VM is built: running vCPUs (KVM ioctls), the Go runtime, the console,
// agent and control sockets, and writing a state file. A guest that takes
// over the VMM through a device model then cannot exec, fork a process,
// ptrace, mount, load modules or kexec.
//
// A refused call fails with EPERM rather than killing the process (as
// Firecracker's filters do): a call this list forgot then surfaces as an
// error that a save or a log line reports, while the guest, whose memory
// pmvm exists to keep, runs on. A call through the i386 ABI kills the
// process and one through x32 is refused: pmvm never makes either. The
// filter is installed on every thread (TSYNC) with no_new_privs, and cannot
// be lifted.
package seccomp

import (
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

var Allowed = []uintptr{
	// The Go runtime: memory, signals, scheduling, timers; its threads are
	// clone(CLONE_THREAD), which Program allows apart.
	unix.SYS_ARCH_PRCTL, unix.SYS_BRK, unix.SYS_EXIT, unix.SYS_EXIT_GROUP, unix.SYS_FUTEX,
	unix.SYS_GETPID, unix.SYS_GETPPID, unix.SYS_GETTID, unix.SYS_MADVISE, unix.SYS_MMAP, unix.SYS_MPROTECT, unix.SYS_MUNMAP,
	unix.SYS_NANOSLEEP, unix.SYS_CLOCK_NANOSLEEP, unix.SYS_PRLIMIT64, unix.SYS_RESTART_SYSCALL, unix.SYS_RSEQ,
	unix.SYS_RT_SIGACTION, unix.SYS_RT_SIGPROCMASK, unix.SYS_RT_SIGRETURN, unix.SYS_SCHED_GETAFFINITY,
	unix.SYS_SCHED_YIELD, unix.SYS_SET_ROBUST_LIST, unix.SYS_SET_TID_ADDRESS, unix.SYS_SIGALTSTACK,
	unix.SYS_TGKILL, unix.SYS_GETRANDOM, unix.SYS_UNAME, unix.SYS_CLOCK_GETTIME, unix.SYS_GETTIMEOFDAY,
	unix.SYS_MEMBARRIER, unix.SYS_MINCORE,
	// The netpoller and descriptors.
	unix.SYS_EPOLL_CREATE1, unix.SYS_EPOLL_CTL, unix.SYS_EPOLL_PWAIT, unix.SYS_EPOLL_WAIT, unix.SYS_EVENTFD2,
	unix.SYS_PIPE2, unix.SYS_CLOSE, unix.SYS_DUP3, unix.SYS_FCNTL, unix.SYS_READ, unix.SYS_WRITE, unix.SYS_PREAD64, unix.SYS_PWRITE64,
	unix.SYS_READV, unix.SYS_WRITEV, unix.SYS_LSEEK, unix.SYS_PPOLL, unix.SYS_POLL,
	// KVM: KVM_RUN and the other vCPU and VM ioctls; the S3 wake and a
	// save read and set vCPU state through them.
	unix.SYS_IOCTL,
	// Sockets: the control socket and the agent line (accept, peer
	// credentials, connect to another pmvm's socket).
	unix.SYS_SOCKET, unix.SYS_BIND, unix.SYS_LISTEN, unix.SYS_ACCEPT4, unix.SYS_CONNECT, unix.SYS_GETSOCKNAME,
	unix.SYS_GETPEERNAME, unix.SYS_GETSOCKOPT, unix.SYS_SETSOCKOPT, unix.SYS_SHUTDOWN, unix.SYS_RECVFROM,
	unix.SYS_SENDTO, unix.SYS_RECVMSG, unix.SYS_SENDMSG,
	// Files: the console file, the state file's atomic durable write, moving
	// a resumed state aside, looking at memory backings and directories.
	unix.SYS_OPENAT, unix.SYS_FSTAT, unix.SYS_NEWFSTATAT, unix.SYS_STATX, unix.SYS_STATFS, unix.SYS_FSTATFS,
	unix.SYS_GETDENTS64, unix.SYS_FSYNC, unix.SYS_FDATASYNC, unix.SYS_FTRUNCATE, unix.SYS_RENAMEAT, unix.SYS_RENAMEAT2,
	unix.SYS_UNLINKAT, unix.SYS_MKDIRAT, unix.SYS_FCHMOD, unix.SYS_FCHMODAT, unix.SYS_FACCESSAT, unix.SYS_FACCESSAT2,
	unix.SYS_READLINKAT, unix.SYS_GETCWD, unix.SYS_FLOCK,
	// Identity, for messages and the control socket's peer check.
	unix.SYS_GETUID, unix.SYS_GETEUID, unix.SYS_GETGID, unix.SYS_GETEGID,
	// Signals to this process (SIGTERM handling, runtime preemption).
	unix.SYS_KILL, unix.SYS_TKILL,
}

// Offsets in struct seccomp_data (linux/seccomp.h).
const (
	offsetNR   = 0
	offsetArch = 4
)

// x32Bit marks the x32 ABI's system call numbers on x86-64.
const x32Bit = 0x40000000

// offsetArg0 is args[0]'s low half (little-endian) in struct seccomp_data.
const offsetArg0 = 16

// Program is the filter as classic BPF: the architecture check; clone3
// answered ENOSYS (its flags are out of a filter's reach; glibc then falls
// back to clone); clone only for a thread (CLONE_THREAD: no new process);
// then one comparison per allowed call.
func Program(allowed []uintptr) ([]bpf.RawInstruction, error) {
	n := len(allowed)
	if n+5 > 255 {
		return nil, fmt.Errorf("seccomp: %d allowed calls do not fit one BPF jump", n)
	}
	// Jump distances count the instructions skipped: the refusal sits at
	// index 9+n, the allow at 10+n and the ENOSYS answer at 11+n.
	insts := []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: offsetArch, Size: 4},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AUDIT_ARCH_X86_64, SkipTrue: 1},
		/* 2 */ bpf.RetConstant{Val: unix.SECCOMP_RET_KILL_PROCESS},
		/* 3 */ bpf.LoadAbsolute{Off: offsetNR, Size: 4},
		// x32 calls (another ABI on the same architecture): refused.
		/* 4 */ bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32Bit, SkipTrue: uint8(n + 4)},
		/* 5 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_CLONE3, SkipTrue: uint8(n + 5)},
		/* 6 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_CLONE, SkipFalse: 2},
		/* 7 */ bpf.LoadAbsolute{Off: offsetArg0, Size: 4},
		/* 8 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: unix.CLONE_THREAD, SkipTrue: uint8(n + 1), SkipFalse: uint8(n)},
	}
	for i, nr := range allowed {
		/* 9+i */ insts = append(insts, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(nr), SkipTrue: uint8(n - i)})
	}
	insts = append(insts,
		/* 9+n */ bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		/* 10+n */ bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW},
		/* 11+n */ bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
	)
	return bpf.Assemble(insts)
}
