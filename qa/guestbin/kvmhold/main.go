// Command kvmhold keeps one idle KVM VM open for the lab host's whole life:
// an in-kernel irqchip and one vCPU that never runs.
//
// Why: a host's first VM flips static keys (the preempt notifiers that
// __schedule tests, the local APIC's "disabled" keys), and the kernel
// patches its own text to do so; the last VM's exit patches it back. Under
// QEMU TCG that text patching has wedged the lab host (both CPUs looping
// through exc_int3 at a patch site in __schedule) when a new pmvm started
// right after the previous one exited. With this VM always open, the
// counts behind those keys never return to zero, so the VMs the tests
// start never patch kernel text.
//
// The lab host's /init starts it after loading kvm-amd and waits for
// /run/kvmhold.ready; it is built static (CGO_ENABLED=0) into every lab
// host image.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// KVM ioctl numbers (linux/kvm.h): _IO(KVMIO, n), KVMIO = 0xAE.
const (
	kvmCreateVM      = 0xAE01
	kvmCreateVCPU    = 0xAE41
	kvmCreateIRQChip = 0xAE60
)

// ioctl retries on EINTR: the Go runtime's own signals (preemption)
// interrupt a KVM_CREATE_VM that waits on a lock.
func ioctl(fd int, req, arg uintptr) (int, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		switch errno {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		default:
			return -1, errno
		}
	}
}

func main() {
	ready := "/run/kvmhold.ready"
	if len(os.Args) > 1 {
		ready = os.Args[1]
	}
	if err := hold(); err != nil {
		fmt.Fprintf(os.Stderr, "PMVM-LAB ERROR: kvmhold: %v\n", err)
		os.Exit(1)
	}
	if err := os.WriteFile(ready, []byte(fmt.Sprintln(os.Getpid())), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "PMVM-LAB ERROR: kvmhold: %v\n", err)
		os.Exit(1)
	}
	// Hold the descriptors until the lab host powers off.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

// hold creates the VM, its irqchip and one vCPU. The descriptors are left
// open on purpose: they are what keeps the VM alive.
func hold() error {
	kvm, err := unix.Open("/dev/kvm", unix.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open /dev/kvm: %w", err)
	}
	vm, err := ioctl(kvm, kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	if _, err := ioctl(vm, kvmCreateIRQChip, 0); err != nil {
		return fmt.Errorf("KVM_CREATE_IRQCHIP: %w", err)
	}
	if _, err := ioctl(vm, kvmCreateVCPU, 0); err != nil {
		return fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	return nil
}
