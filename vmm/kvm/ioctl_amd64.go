package kvm

// The KVM ioctl numbers, all in one table. Each is built from the kernel's
// _IOC encoding and the size of the struct it passes, so a wrong struct size
// shows up as a wrong number in TestIoctlNumbers.

const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	kvmio = 0xAE
)

func ioc(dir, nr, size uintptr) uintptr {
	return dir<<30 | size<<16 | kvmio<<8 | nr
}

var (
	ioctlGetAPIVersion       = ioc(iocNone, 0x00, 0)
	ioctlCreateVM            = ioc(iocNone, 0x01, 0)
	ioctlCheckExtension      = ioc(iocNone, 0x03, 0)
	ioctlGetVCPUMmapSize     = ioc(iocNone, 0x04, 0)
	ioctlGetSupportedCPUID   = ioc(iocRead|iocWrite, 0x05, sizeofCPUIDHeader)
	ioctlCreateVCPU          = ioc(iocNone, 0x41, 0)
	ioctlSetUserMemoryRegion = ioc(iocWrite, 0x46, sizeofUserspaceMemoryRegion)
	ioctlSetTSSAddr          = ioc(iocNone, 0x47, 0)
	ioctlSetIdentityMapAddr  = ioc(iocWrite, 0x48, 8)
	ioctlCreateIRQChip       = ioc(iocNone, 0x60, 0)
	ioctlIRQLine             = ioc(iocWrite, 0x61, sizeofIRQLevel)
	ioctlCreatePIT2          = ioc(iocWrite, 0x77, sizeofPITConfig)
	ioctlSetClock            = ioc(iocWrite, 0x7b, sizeofClockData)
	ioctlGetClock            = ioc(iocRead, 0x7c, sizeofClockData)
	ioctlRun                 = ioc(iocNone, 0x80, 0)
	ioctlGetRegs             = ioc(iocRead, 0x81, sizeofRegs)
	ioctlSetRegs             = ioc(iocWrite, 0x82, sizeofRegs)
	ioctlGetSregs            = ioc(iocRead, 0x83, sizeofSregs)
	ioctlSetSregs            = ioc(iocWrite, 0x84, sizeofSregs)
	ioctlGetMSRs             = ioc(iocRead|iocWrite, 0x88, sizeofMSRsHeader)
	ioctlSetMSRs             = ioc(iocWrite, 0x89, sizeofMSRsHeader)
	ioctlGetFPU              = ioc(iocRead, 0x8c, sizeofFPU)
	ioctlSetFPU              = ioc(iocWrite, 0x8d, sizeofFPU)
	ioctlGetLAPIC            = ioc(iocRead, 0x8e, sizeofLAPICState)
	ioctlSetLAPIC            = ioc(iocWrite, 0x8f, sizeofLAPICState)
	ioctlSetCPUID2           = ioc(iocWrite, 0x90, sizeofCPUIDHeader)
	ioctlGetMPState          = ioc(iocRead, 0x98, 4)
	ioctlSetMPState          = ioc(iocWrite, 0x99, 4)
	ioctlSetXCRS             = ioc(iocWrite, 0xa7, sizeofXCRs)
)

// Capabilities checked with KVM_CHECK_EXTENSION.
const (
	CapIRQChip       = 0
	CapUserMemory    = 3
	CapSetTSSAddr    = 4
	CapExtCPUID      = 7
	CapPIT2          = 33
	CapImmediateExit = 136
)

// Exit reasons from kvm_run.exit_reason.
const (
	ExitUnknown       = 0
	ExitException     = 1
	ExitIO            = 2
	ExitHypercall     = 3
	ExitDebug         = 4
	ExitHLT           = 5
	ExitMMIO          = 6
	ExitIRQWindowOpen = 7
	ExitShutdown      = 8
	ExitFailEntry     = 9
	ExitIntr          = 10
	ExitInternalError = 17
	ExitSystemEvent   = 24
)

var exitNames = map[uint32]string{
	ExitUnknown: "unknown", ExitException: "exception", ExitIO: "io",
	ExitHypercall: "hypercall", ExitDebug: "debug", ExitHLT: "hlt",
	ExitMMIO: "mmio", ExitIRQWindowOpen: "irq-window-open",
	ExitShutdown: "shutdown", ExitFailEntry: "fail-entry", ExitIntr: "intr",
	ExitInternalError: "internal-error", ExitSystemEvent: "system-event",
}

// ExitName names an exit reason for logs and errors.
func ExitName(reason uint32) string {
	if n, ok := exitNames[reason]; ok {
		return n
	}
	return "exit-" + itoa(uint64(reason))
}

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}

// System event types (kvm_run.system_event.type).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

// Multiprocessing states (KVM_GET/SET_MP_STATE).
const (
	MPStateRunnable      = 0
	MPStateUninitialized = 1
	MPStateInitReceived  = 2
	MPStateHalted        = 3
	MPStateSIPIReceived  = 4
)

// PITSpeakerDummy makes KVM answer the PC speaker port 0x61 in the kernel.
const PITSpeakerDummy = 1
