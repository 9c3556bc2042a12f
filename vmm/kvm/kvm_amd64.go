// Package kvm wraps /dev/kvm in typed handles that own their file
// descriptors: System (the /dev/kvm fd), VM and VCPU. Every handle keeps its
// *os.File alive and closes it in Close, so no finalizer can close a raw fd
// under us. All unsafe code lives in kvm_unsafe.go.
package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// APIVersion is the only KVM API version that exists (KVM_GET_API_VERSION).
const APIVersion = 12

// DevicePath is where the KVM device lives (a variable so that tests can
// play a host without one).
var DevicePath = "/dev/kvm"

// ErrNoKVM means this host cannot run guests: no usable KVM device.
var ErrNoKVM = errors.New("this host has no usable KVM")

// System is an open /dev/kvm.
type System struct {
	f *os.File
}

// OpenSystem opens /dev/kvm and checks the API version.
func OpenSystem() (*System, error) {
	f, err := os.OpenFile(DevicePath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist; load kvm_intel or kvm_amd (modprobe kvm_amd), and on a host that is itself a VM enable nested virtualisation", ErrNoKVM, DevicePath)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %v (run pmvm as root, or as a member of the group that owns %s)", ErrNoKVM, DevicePath, err, DevicePath)
	}
	s := &System{f: f}
	v, err := s.ioctlInt(ioctlGetAPIVersion, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s does not answer KVM_GET_API_VERSION: %v", ErrNoKVM, DevicePath, err)
	}
	if v != APIVersion {
		f.Close()
		return nil, fmt.Errorf("%w: %s speaks KVM API %d, pmvm needs %d", ErrNoKVM, DevicePath, v, APIVersion)
	}
	return s, nil
}

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error { return s.f.Close() }

// CheckExtension returns KVM_CHECK_EXTENSION for cap (0 = unsupported).
func (s *System) CheckExtension(cap int) int {
	v, err := s.ioctlInt(ioctlCheckExtension, uintptr(cap))
	if err != nil {
		return 0
	}
	return v
}

// VCPUMmapSize is the size of each vCPU's shared kvm_run area.
func (s *System) VCPUMmapSize() (int, error) {
	v, err := s.ioctlInt(ioctlGetVCPUMmapSize, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	return v, nil
}

// maxCPUIDEntries bounds KVM_GET_SUPPORTED_CPUID's answer (KVM's own limit is 256).
const maxCPUIDEntries = 256

// SupportedCPUID returns the CPUID leaves KVM can offer a guest.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	entries, err := s.getSupportedCPUID(maxCPUIDEntries)
	if err != nil {
		return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
	}
	return entries, nil
}

// CreateVM creates a virtual machine with no memory and no vCPUs.
func (s *System) CreateVM() (*VM, error) {
	fd, err := s.ioctlInt(ioctlCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	mmapSize, err := s.VCPUMmapSize()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &VM{f: os.NewFile(uintptr(fd), "kvm-vm"), runSize: mmapSize}, nil
}

// VM is a KVM virtual machine fd.
type VM struct {
	f       *os.File
	runSize int
}

// Close closes the VM fd. The kernel frees the VM once every vCPU fd is closed too.
func (vm *VM) Close() error { return vm.f.Close() }

// SetUserMemoryRegion maps size bytes of host memory at hostAddr into the
// guest at guestPhys, as memory slot slot.
func (vm *VM) SetUserMemoryRegion(slot uint32, guestPhys, size uint64, hostAddr uintptr) error {
	r := UserspaceMemoryRegion{Slot: slot, GuestPhysAddr: guestPhys, MemorySize: size, UserspaceAddr: uint64(hostAddr)}
	if err := vm.setUserMemoryRegion(&r); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION slot %d gpa %#x size %#x: %w", slot, guestPhys, size, err)
	}
	return nil
}

// SetTSSAddr places the three pages KVM needs for real-mode emulation on VMX.
func (vm *VM) SetTSSAddr(addr uint64) error {
	if _, err := ioctlFd(vm.f, ioctlSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("KVM_SET_TSS_ADDR %#x: %w", addr, err)
	}
	return nil
}

// SetIdentityMapAddr places the page KVM uses for the identity map on VMX.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	if err := vm.setIdentityMapAddr(addr); err != nil {
		return fmt.Errorf("KVM_SET_IDENTITY_MAP_ADDR %#x: %w", addr, err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC pair, IOAPIC and local APICs.
func (vm *VM) CreateIRQChip() error {
	if _, err := ioctlFd(vm.f, ioctlCreateIRQChip, 0); err != nil {
		return fmt.Errorf("KVM_CREATE_IRQCHIP: %w", err)
	}
	return nil
}

// CreatePIT2 creates the in-kernel i8254 PIT.
func (vm *VM) CreatePIT2(flags uint32) error {
	if err := vm.createPIT2(flags); err != nil {
		return fmt.Errorf("KVM_CREATE_PIT2: %w", err)
	}
	return nil
}

// SetIRQLine drives in-kernel irqchip input irq (a GSI) to level.
func (vm *VM) SetIRQLine(irq uint32, high bool) error {
	l := irqLevel{IRQ: irq}
	if high {
		l.Level = 1
	}
	if err := vm.irqLine(&l); err != nil {
		return fmt.Errorf("KVM_IRQ_LINE %d=%d: %w", irq, l.Level, err)
	}
	return nil
}

// Clock returns the guest's kvmclock (KVM_GET_CLOCK).
func (vm *VM) Clock() (ClockData, error) {
	var c ClockData
	if err := vm.getClock(&c); err != nil {
		return c, fmt.Errorf("KVM_GET_CLOCK: %w", err)
	}
	return c, nil
}

// SetClock sets the guest's kvmclock (KVM_SET_CLOCK).
func (vm *VM) SetClock(c ClockData) error {
	if err := vm.setClock(&c); err != nil {
		return fmt.Errorf("KVM_SET_CLOCK: %w", err)
	}
	return nil
}

// CreateVCPU creates vCPU id (its APIC id) and maps its kvm_run area.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctlFd(vm.f, ioctlCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU %d: %w", id, err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("kvm-vcpu-%d", id))
	run, err := unix.Mmap(fd, 0, vm.runSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mmap kvm_run of vCPU %d: %w", id, err)
	}
	return &VCPU{f: f, ID: id, run: run}, nil
}

// VCPU is one virtual CPU. Run must be called from one locked OS thread;
// Kick may be called from any goroutine.
type VCPU struct {
	f   *os.File
	ID  int
	run []byte // the kvm_run area shared with the kernel

	mu  sync.Mutex // guards tid
	tid int        // OS thread running KVM_RUN, 0 when none
}

// Close unmaps kvm_run and closes the vCPU fd.
func (c *VCPU) Close() error {
	var errs []error
	if c.run != nil {
		errs = append(errs, unix.Munmap(c.run))
		c.run = nil
	}
	errs = append(errs, c.f.Close())
	return errors.Join(errs...)
}

// Offsets inside struct kvm_run.
const (
	runImmediateExit = 1
	runExitReason    = 8
	runExitUnion     = 32
)

// Run enters the guest until the next exit and returns the exit reason.
// A signal (Kick, or the Go runtime's own preemption signal) makes it
// return ExitIntr with a nil error, and so does EAGAIN, which KVM returns
// when a vCPU still waiting for INIT/SIPI is woken without one.
func (c *VCPU) Run() (uint32, error) {
	if err := c.kvmRun(); err != nil {
		if err == unix.EINTR || err == unix.EAGAIN {
			c.run[runImmediateExit] = 0
			return ExitIntr, nil
		}
		return 0, fmt.Errorf("KVM_RUN on vCPU %d: %w", c.ID, err)
	}
	return binary.LittleEndian.Uint32(c.run[runExitReason:]), nil
}

// BindThread records the calling OS thread as the one that runs this vCPU,
// so Kick can interrupt it. Call it after runtime.LockOSThread.
func (c *VCPU) BindThread() {
	c.mu.Lock()
	c.tid = unix.Gettid()
	c.mu.Unlock()
}

// UnbindThread forgets the thread recorded by BindThread.
func (c *VCPU) UnbindThread() {
	c.mu.Lock()
	c.tid = 0
	c.mu.Unlock()
}

// Kick makes the current or next KVM_RUN return ExitIntr promptly: it sets
// immediate_exit, then signals the vCPU thread out of the guest. SIGURG is
// the Go runtime's own preemption signal, so it is always handled and
// harmless to the rest of the process.
func (c *VCPU) Kick() {
	c.run[runImmediateExit] = 1
	c.mu.Lock()
	tid := c.tid
	c.mu.Unlock()
	if tid != 0 {
		_ = unix.Tgkill(unix.Getpid(), tid, unix.SIGURG)
	}
}

// ClearKick undoes a Kick that has not been consumed by Run.
func (c *VCPU) ClearKick() { c.run[runImmediateExit] = 0 }

// IOExit describes a KVM_EXIT_IO: Data aliases the kvm_run area and holds
// Count items of Size bytes; for In the VMM fills it before the next Run.
type IOExit struct {
	Out  bool
	Size int
	Port uint16
	Data []byte
}

// IO decodes the current KVM_EXIT_IO.
func (c *VCPU) IO() (IOExit, error) {
	u := c.run[runExitUnion:]
	size := int(u[1])
	count := int(binary.LittleEndian.Uint32(u[4:]))
	off := binary.LittleEndian.Uint64(u[8:])
	n := uint64(size) * uint64(count)
	if size != 1 && size != 2 && size != 4 || off > uint64(len(c.run)) || n > uint64(len(c.run))-off {
		return IOExit{}, fmt.Errorf("vCPU %d: malformed io exit: size %d count %d offset %#x", c.ID, size, count, off)
	}
	return IOExit{Out: u[0] == 1, Size: size, Port: binary.LittleEndian.Uint16(u[2:]), Data: c.run[off : off+n]}, nil
}

// MMIOExit describes a KVM_EXIT_MMIO: Data aliases the kvm_run area.
type MMIOExit struct {
	Addr  uint64
	Write bool
	Data  []byte
}

// MMIO decodes the current KVM_EXIT_MMIO.
func (c *VCPU) MMIO() MMIOExit {
	u := c.run[runExitUnion:]
	n := binary.LittleEndian.Uint32(u[16:])
	if n > 8 {
		n = 8
	}
	return MMIOExit{Addr: binary.LittleEndian.Uint64(u[0:]), Write: u[20] != 0, Data: u[8 : 8+n]}
}

// SystemEventType decodes the type of the current KVM_EXIT_SYSTEM_EVENT.
func (c *VCPU) SystemEventType() uint32 {
	return binary.LittleEndian.Uint32(c.run[runExitUnion:])
}

// InternalError describes the current KVM_EXIT_INTERNAL_ERROR.
func (c *VCPU) InternalError() string {
	u := c.run[runExitUnion:]
	sub := binary.LittleEndian.Uint32(u[0:])
	nd := binary.LittleEndian.Uint32(u[4:])
	if nd > 16 {
		nd = 16
	}
	s := fmt.Sprintf("suberror %d", sub)
	for i := uint32(0); i < nd; i++ {
		s += fmt.Sprintf(" data[%d]=%#x", i, binary.LittleEndian.Uint64(u[8+8*i:]))
	}
	return s
}

// FailEntryReason decodes the current KVM_EXIT_FAIL_ENTRY.
func (c *VCPU) FailEntryReason() uint64 {
	return binary.LittleEndian.Uint64(c.run[runExitUnion:])
}

// Regs reads the general purpose registers.
func (c *VCPU) Regs() (Regs, error) {
	var r Regs
	err := c.getRegs(&r)
	return r, wrap(err, "KVM_GET_REGS", c.ID)
}

// SetRegs writes the general purpose registers.
func (c *VCPU) SetRegs(r Regs) error { return wrap(c.setRegs(&r), "KVM_SET_REGS", c.ID) }

// Sregs reads the special registers.
func (c *VCPU) Sregs() (Sregs, error) {
	var s Sregs
	err := c.getSregs(&s)
	return s, wrap(err, "KVM_GET_SREGS", c.ID)
}

// SetSregs writes the special registers.
func (c *VCPU) SetSregs(s Sregs) error { return wrap(c.setSregs(&s), "KVM_SET_SREGS", c.ID) }

// FPU reads the FPU state.
func (c *VCPU) FPU() (FPU, error) {
	var f FPU
	err := c.getFPU(&f)
	return f, wrap(err, "KVM_GET_FPU", c.ID)
}

// SetFPU writes the FPU state.
func (c *VCPU) SetFPU(f FPU) error { return wrap(c.setFPU(&f), "KVM_SET_FPU", c.ID) }

// LAPIC reads the local APIC register page.
func (c *VCPU) LAPIC() (LAPICState, error) {
	var l LAPICState
	err := c.getLAPIC(&l)
	return l, wrap(err, "KVM_GET_LAPIC", c.ID)
}

// SetLAPIC writes the local APIC register page.
func (c *VCPU) SetLAPIC(l LAPICState) error { return wrap(c.setLAPIC(&l), "KVM_SET_LAPIC", c.ID) }

// MPState reads the vCPU's multiprocessing state.
func (c *VCPU) MPState() (uint32, error) {
	var s uint32
	err := c.getMPState(&s)
	return s, wrap(err, "KVM_GET_MP_STATE", c.ID)
}

// SetMPState writes the vCPU's multiprocessing state.
func (c *VCPU) SetMPState(s uint32) error { return wrap(c.setMPState(&s), "KVM_SET_MP_STATE", c.ID) }

// SetXCR0 sets the vCPU's XCR0 (the XSAVE components enabled).
func (c *VCPU) SetXCR0(v uint64) error {
	x := xcrs{NrXCRs: 1}
	x.XCRs[0].XCR, x.XCRs[0].Value = 0, v
	return wrap(c.setXCRs(&x), "KVM_SET_XCRS", c.ID)
}

// SetCPUID sets the CPUID leaves the guest sees on this vCPU.
func (c *VCPU) SetCPUID(entries []CPUIDEntry) error {
	return wrap(c.setCPUID2(entries), "KVM_SET_CPUID2", c.ID)
}

// SetMSRs writes model-specific registers; every entry must be accepted.
func (c *VCPU) SetMSRs(entries []MSREntry) error {
	n, err := c.msrs(ioctlSetMSRs, entries)
	if err != nil {
		return wrap(err, "KVM_SET_MSRS", c.ID)
	}
	if n != len(entries) {
		return fmt.Errorf("KVM_SET_MSRS on vCPU %d: MSR %#x refused (%d of %d set)", c.ID, entries[n].Index, n, len(entries))
	}
	return nil
}

// MSRs reads the MSRs whose Index is set in entries, in place.
func (c *VCPU) MSRs(entries []MSREntry) error {
	n, err := c.msrs(ioctlGetMSRs, entries)
	if err != nil {
		return wrap(err, "KVM_GET_MSRS", c.ID)
	}
	if n != len(entries) {
		return fmt.Errorf("KVM_GET_MSRS on vCPU %d: MSR %#x unreadable", c.ID, entries[n].Index)
	}
	return nil
}

func wrap(err error, op string, id int) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s on vCPU %d: %w", op, id, err)
}
