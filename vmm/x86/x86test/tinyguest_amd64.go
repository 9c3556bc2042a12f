// Package x86test builds tiny hand-assembled guests for tests and
// benchmarks that run on /dev/kvm, where a real Linux cannot boot: a
// bzImage-shaped wrapper for 64-bit code, and a guest that plays the OS's
// part of ACPI S3 (suspend, then resume at its waking vector).
package x86test

import "encoding/binary"

// BzImage wraps 64-bit code in the smallest image the 64-bit boot protocol
// accepts: 4 setup sectors, protocol 2.15, loaded high, with code at the
// 64-bit entry point (0x200 into the protected-mode part).
func BzImage(code []byte) []byte {
	const setupSects = 4
	img := make([]byte, (setupSects+1)*512+0x1000)
	img[0x1f1] = setupSects
	img[0x201] = 0x6a // the setup header ends at 0x202 + 0x6a
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x020f) // protocol 2.15
	img[0x211] = 0x01                                  // loadflags: LOADED_HIGH
	img[0x236] = 0x01                                  // xloadflags: XLF_KERNEL_64
	binary.LittleEndian.PutUint32(img[0x22c:], 0x7fffffff)
	binary.LittleEndian.PutUint32(img[0x238:], 2047) // cmdline_size
	copy(img[(setupSects+1)*512+0x200:], code)
	return img
}

// WakeVector is where SuspendingKernel puts ResumeCode before it sleeps:
// real mode, CS=0x3000 IP=0.
const WakeVector = 0x30000

// SuspendOutput is what SuspendingKernel prints on COM1 before S3.
const SuspendOutput = "S"

// ResumeOutput is what ResumeCode prints on COM1: 'W', the marker byte the
// guest left in RAM before it suspended, and PM1_STS's high byte with
// WAK_STS (0x80) set.
const ResumeOutput = "WM\x80"

// SuspendingKernel is a bzImage whose 64-bit entry sets the FACS waking
// vector (the FACS is at guest-physical facs) to WakeVector, leaves the
// marker 'M' at 0x40000, prints SuspendOutput and writes SLP_TYP=3|SLP_EN to
// PM1a_CNT (0x604): it suspends itself to S3.
func SuspendingKernel(facs uint64) []byte {
	const facsWakingVector = 12
	code := []byte{0xc7, 0x04, 0x25}
	code = binary.LittleEndian.AppendUint32(code, uint32(facs+facsWakingVector))
	code = binary.LittleEndian.AppendUint32(code, WakeVector) // mov dword [FACS+12], WakeVector
	// Its resume code, as an OS puts its own in RAM before it sleeps (a
	// cold boot clears RAM below 1 MiB, so nothing may be left there).
	code = append(code, StoreBytes(WakeVector, ResumeCode)...)
	code = append(code,
		0xc6, 0x04, 0x25, 0x00, 0x00, 0x04, 0x00, 'M', // mov byte [0x40000], 'M'
		0x66, 0xba, 0xf8, 0x03, 0xb0, 'S', 0xee, // out 'S' to COM1
		0x66, 0xb8, 0x00, 0x2c, // mov ax, SLP_TYP=3|SLP_EN
		0x66, 0xba, 0x04, 0x06, 0x66, 0xef, // out to PM1a_CNT
		0xeb, 0xfe) // jmp $ (never reached: the vCPU parks)
	return BzImage(code)
}

// StoreBytes is long-mode code that writes b to guest-physical addr (RAM
// below 4 GiB is identity-mapped at boot), a byte at a time.
func StoreBytes(addr uint32, b []byte) []byte {
	var code []byte
	for i, v := range b {
		code = append(code, 0xc6, 0x04, 0x25) // mov byte [addr+i], v
		code = binary.LittleEndian.AppendUint32(code, addr+uint32(i))
		code = append(code, v)
	}
	return code
}

// ResumeCode runs in real mode at WakeVector: it prints ResumeOutput and
// powers off (S5). Its first port write is where a timed resume ends.
var ResumeCode = []byte{
	0xba, 0xf8, 0x03, 0xb0, 'W', 0xee, // mov dx, 0x3f8; mov al, 'W'; out
	0xb8, 0x00, 0x40, 0x8e, 0xd8, // mov ax, 0x4000; mov ds, ax
	0xa0, 0x00, 0x00, 0xee, // mov al, [0]; out (the marker at 0x40000)
	0xba, 0x00, 0x06, 0xed, 0x88, 0xe0, // in ax, PM1_STS; mov al, ah
	0xba, 0xf8, 0x03, 0xee, // out
	0xba, 0x04, 0x06, 0xb8, 0x00, 0x34, 0xef, // PM1a_CNT = SLP_TYP 5 | SLP_EN: S5
	0xeb, 0xfe, // jmp $
}
