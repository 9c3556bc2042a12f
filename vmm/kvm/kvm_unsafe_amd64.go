package kvm

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlFd issues an ioctl whose argument is a plain integer and whose
// result is an integer (a count or a new fd).
// ioctlFd issues an ioctl, again when a signal interrupted it: the Go
// runtime's own preemption signal can interrupt KVM_CREATE_VM and the
// like (seen in the lab). KVM_RUN uses ioctlOnce: its EINTR is a kick.
func ioctlFd(f *os.File, req, arg uintptr) (int, error) {
	for {
		r, err := ioctlOnce(f, req, arg)
		if err != unix.EINTR {
			return r, err
		}
	}
}

func ioctlOnce(f *os.File, req, arg uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, arg)
	runtime.KeepAlive(f)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func ioctlPtr(f *os.File, req uintptr, p unsafe.Pointer) error {
	_, err := ioctlPtrN(f, req, p)
	return err
}

// ioctlPtrN issues an ioctl on a pointer argument and returns its result
// (again when a signal interrupted it, as ioctlFd).
func ioctlPtrN(f *os.File, req uintptr, p unsafe.Pointer) (int, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(p))
		runtime.KeepAlive(f)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(r), nil
	}
}

func (s *System) ioctlInt(req, arg uintptr) (int, error) { return ioctlFd(s.f, req, arg) }

func (s *System) getSupportedCPUID(max int) ([]CPUIDEntry, error) {
	buf := make([]byte, sizeofCPUIDHeader+max*sizeofCPUIDEntry)
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(max)
	if err := ioctlPtr(s.f, ioctlGetSupportedCPUID, unsafe.Pointer(&buf[0])); err != nil {
		return nil, err
	}
	n := int(*(*uint32)(unsafe.Pointer(&buf[0])))
	if n > max {
		n = max
	}
	out := make([]CPUIDEntry, n)
	for i := range out {
		out[i] = *(*CPUIDEntry)(unsafe.Pointer(&buf[sizeofCPUIDHeader+i*sizeofCPUIDEntry]))
	}
	return out, nil
}

func (vm *VM) setUserMemoryRegion(r *UserspaceMemoryRegion) error {
	return ioctlPtr(vm.f, ioctlSetUserMemoryRegion, unsafe.Pointer(r))
}

func (vm *VM) setIdentityMapAddr(addr uint64) error {
	return ioctlPtr(vm.f, ioctlSetIdentityMapAddr, unsafe.Pointer(&addr))
}

func (vm *VM) createPIT2(flags uint32) error {
	c := pitConfig{Flags: flags}
	return ioctlPtr(vm.f, ioctlCreatePIT2, unsafe.Pointer(&c))
}

func (vm *VM) irqLine(l *irqLevel) error { return ioctlPtr(vm.f, ioctlIRQLine, unsafe.Pointer(l)) }
func (vm *VM) getClock(c *ClockData) error {
	return ioctlPtr(vm.f, ioctlGetClock, unsafe.Pointer(c))
}
func (vm *VM) setClock(c *ClockData) error {
	return ioctlPtr(vm.f, ioctlSetClock, unsafe.Pointer(c))
}

func (c *VCPU) kvmRun() error {
	_, err := ioctlOnce(c.f, ioctlRun, 0)
	return err
}

func (c *VCPU) getRegs(r *Regs) error   { return ioctlPtr(c.f, ioctlGetRegs, unsafe.Pointer(r)) }
func (c *VCPU) setRegs(r *Regs) error   { return ioctlPtr(c.f, ioctlSetRegs, unsafe.Pointer(r)) }
func (c *VCPU) getSregs(s *Sregs) error { return ioctlPtr(c.f, ioctlGetSregs, unsafe.Pointer(s)) }
func (c *VCPU) setSregs(s *Sregs) error { return ioctlPtr(c.f, ioctlSetSregs, unsafe.Pointer(s)) }
func (c *VCPU) getFPU(f *FPU) error     { return ioctlPtr(c.f, ioctlGetFPU, unsafe.Pointer(f)) }
func (c *VCPU) setFPU(f *FPU) error     { return ioctlPtr(c.f, ioctlSetFPU, unsafe.Pointer(f)) }
func (c *VCPU) setXCRs(x *xcrs) error   { return ioctlPtr(c.f, ioctlSetXCRS, unsafe.Pointer(x)) }
func (c *VCPU) getLAPIC(l *LAPICState) error {
	return ioctlPtr(c.f, ioctlGetLAPIC, unsafe.Pointer(l))
}
func (c *VCPU) setLAPIC(l *LAPICState) error {
	return ioctlPtr(c.f, ioctlSetLAPIC, unsafe.Pointer(l))
}
func (c *VCPU) getMPState(s *uint32) error {
	return ioctlPtr(c.f, ioctlGetMPState, unsafe.Pointer(s))
}
func (c *VCPU) setMPState(s *uint32) error {
	return ioctlPtr(c.f, ioctlSetMPState, unsafe.Pointer(s))
}

func (c *VCPU) setCPUID2(entries []CPUIDEntry) error {
	buf := make([]byte, sizeofCPUIDHeader+len(entries)*sizeofCPUIDEntry)
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(entries))
	for i := range entries {
		*(*CPUIDEntry)(unsafe.Pointer(&buf[sizeofCPUIDHeader+i*sizeofCPUIDEntry])) = entries[i]
	}
	return ioctlPtr(c.f, ioctlSetCPUID2, unsafe.Pointer(&buf[0]))
}

// msrs runs KVM_GET_MSRS or KVM_SET_MSRS and returns how many entries the
// kernel processed; GET fills entries in place.
func (c *VCPU) msrs(req uintptr, entries []MSREntry) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	buf := make([]byte, sizeofMSRsHeader+len(entries)*sizeofMSREntry)
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(entries))
	for i := range entries {
		*(*MSREntry)(unsafe.Pointer(&buf[sizeofMSRsHeader+i*sizeofMSREntry])) = entries[i]
	}
	n, err := ioctlPtrN(c.f, req, unsafe.Pointer(&buf[0]))
	if err != nil {
		return 0, err
	}
	for i := range entries {
		entries[i] = *(*MSREntry)(unsafe.Pointer(&buf[sizeofMSRsHeader+i*sizeofMSREntry]))
	}
	return n, nil
}
