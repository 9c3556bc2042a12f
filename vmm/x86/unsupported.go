//go:build !linux || !amd64

package x86

// pmvm drives Linux KVM on x86-64 only: its ioctl structures, boot
// protocol, page tables and devices are those of that platform, so the
// files of this package are *_amd64.go and a build for any other target
// stops here, on an undefined name that says why, rather than compiling a
// VMM that cannot work.
var _ = pmvm_runs_only_on_linux_amd64
