package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/acpi"
	"github.com/pmvm/pmvm/vmm/x86"
)

// WakeVector is where the tiny guest's resume code sits: real mode, CS=0x3000 IP=0.
const WakeVector = 0x30000

// ResumeOutput is what the resume code prints on COM1: 'W', the marker byte
// the guest left in RAM before it suspended, and PM1_STS's high byte with
// WAK_STS (0x80) set.
const ResumeOutput = "WM\x80"

// SuspendOutput is what the guest prints before it enters S3.
const SuspendOutput = "S"

// resumeCode runs at the waking vector: it prints ResumeOutput and powers
// off (S5). Its first instruction pair is the port write that ends a timed
// resume.
var resumeCode = []byte{
	0xba, 0xf8, 0x03, 0xb0, 'W', 0xee, // mov dx, 0x3f8; mov al, 'W'; out
	0xb8, 0x00, 0x40, 0x8e, 0xd8, // mov ax, 0x4000; mov ds, ax
	0xa0, 0x00, 0x00, 0xee, // mov al, [0]; out (the marker at 0x40000)
	0xba, 0x00, 0x06, 0xed, 0x88, 0xe0, // in ax, PM1_STS; mov al, ah
	0xba, 0xf8, 0x03, 0xee, // out
	0xba, 0x04, 0x06, 0xb8, 0x00, 0x34, 0xef, // PM1a_CNT = SLP_TYP 5 | SLP_EN: S5
	0xeb, 0xfe, // jmp $
}

// SuspendingKernel returns a bzImage-shaped kernel whose 64-bit entry plays
// the OS's part of S3: it sets the FACS waking vector to WakeVector, leaves
// a marker byte 'M' at 0x40000, prints SuspendOutput and writes
// SLP_TYP=S3|SLP_EN to PM1a_CNT. The resume code itself is put in RAM by
// CreateBacking (a real OS keeps its resume code in RAM the same way).
func SuspendingKernel() ([]byte, error) {
	tables, err := acpi.Build(vmm.ACPIConfig(1), x86.ACPITablesAddr)
	if err != nil {
		return nil, err
	}
	vecAddr := uint32(tables.FACS + acpi.FACSFirmwareWakingVectorOffset)
	code := []byte{0xc7, 0x04, 0x25}
	code = binary.LittleEndian.AppendUint32(code, vecAddr)
	code = binary.LittleEndian.AppendUint32(code, WakeVector) // mov dword [FACS+12], WakeVector
	code = append(code,
		0xc6, 0x04, 0x25, 0x00, 0x00, 0x04, 0x00, 'M', // mov byte [0x40000], 'M'
		0x66, 0xba, 0xf8, 0x03, 0xb0, 'S', 0xee, // out 'S' to COM1
		0x66, 0xb8, 0x00, 0x2c, // mov ax, SLP_TYP=3|SLP_EN
		0x66, 0xba, 0x04, 0x06, 0x66, 0xef, // out to PM1a_CNT
		0xeb, 0xfe) // jmp $ (never reached: the vCPU parks)
	return bzImage(code), nil
}

// bzImage wraps 64-bit code in the smallest image the boot protocol
// loader accepts: 4 setup sectors, protocol 2.15, a loaded-high kernel
// with a 64-bit entry point at +0x200.
func bzImage(code []byte) []byte {
	img := make([]byte, 5*512+0x1000)
	img[0x1f1] = 4                                     // setup_sects
	img[0x201] = 0x6a                                  // jump (part of the header signature area)
	copy(img[0x202:], "HdrS")                          // header magic
	binary.LittleEndian.PutUint16(img[0x206:], 0x020f) // protocol 2.15
	img[0x211] = 0x01                                  // loadflags: LOADED_HIGH
	img[0x236] = 0x01                                  // xloadflags: XLF_KERNEL_64
	binary.LittleEndian.PutUint32(img[0x238:], 2047)   // cmdline_size
	copy(img[5*512+0x200:], code)                      // startup_64
	return img
}

// tmpfsMagic is TMPFS_MAGIC from linux/magic.h.
const tmpfsMagic = 0x01021994

// CheckShm says why /dev/shm cannot hold the benchmark's guest RAM, or nil.
func CheckShm() error {
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil {
		return fmt.Errorf("/dev/shm: %w", err)
	}
	if st.Type != tmpfsMagic {
		return fmt.Errorf("/dev/shm is not a tmpfs (f_type %#x)", st.Type)
	}
	return nil
}

// CheckKVM says why /dev/kvm cannot run the tiny guest, or nil.
func CheckKVM() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("/dev/kvm: %w (the pmvm benchmarks need KVM on this host)", err)
	}
	return f.Close()
}

// ShmPath names a backing file in /dev/shm for this process.
func ShmPath(name string) string {
	return fmt.Sprintf("/dev/shm/pmvm-bench-%d-%s", os.Getpid(), strings.NewReplacer("/", "_", " ", "_").Replace(name))
}

// CreateBacking creates the file at path with size bytes (sparse: no page
// is allocated) and the tiny guest's resume code at WakeVector. With
// touched, every page is written first (with a non-zero pattern, so that
// nothing can skip it as a zero page) and the whole file is resident in
// tmpfs. The file must not exist.
func CreateBacking(path string, size uint64, touched bool) (err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create backing: %w", err)
	}
	defer func() {
		err = errors.Join(err, f.Close())
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := f.Truncate(int64(size)); err != nil {
		return fmt.Errorf("size backing: %w", err)
	}
	if touched {
		buf := make([]byte, 4<<20)
		for off := uint64(0); off < size; off += uint64(len(buf)) {
			for i := 0; i < len(buf); i += 4096 {
				binary.LittleEndian.PutUint64(buf[i:], 0xa5a5a5a500000000|(off+uint64(i))>>12)
			}
			n := min(uint64(len(buf)), size-off)
			if _, err := f.WriteAt(buf[:n], int64(off)); err != nil {
				return fmt.Errorf("touch backing: %w", err)
			}
		}
	}
	if _, err := f.WriteAt(resumeCode, WakeVector); err != nil {
		return fmt.Errorf("write resume code: %w", err)
	}
	return nil
}

// ResidentBytes is how much of the file at path is allocated (resident,
// for a tmpfs file).
func ResidentBytes(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return uint64(st.Blocks) * 512, nil
}

// PMVMConfigText is the tiny guest's VM config: one vCPU, mode "reboot",
// one memory block of size bytes on backing (a /dev/shm file, shared,
// declared preserved across kexec), its sockets in dir.
func PMVMConfigText(dir, kernel, backing string, size uint64) string {
	return fmt.Sprintf(`name = "bench"
vcpus = 1
mode = "reboot"
[boot]
kernel = %q
[[memory]]
name = "ram0"
size = %q
backing = %q
shared = true
preserved_across_kexec = true
[console]
output = "stdout"
[agent]
socket = %q
[control]
socket = %q
`, kernel, configs.FormatSize(size), backing, filepath.Join(dir, "agent.sock"), filepath.Join(dir, "control.sock"))
}

// PMVMConfig decodes and validates PMVMConfigText as `pmvm run` does.
func PMVMConfig(dir, kernel, backing string, size uint64) (*configs.VM, error) {
	cfg, err := configs.Decode("bench.toml", strings.NewReader(PMVMConfigText(dir, kernel, backing, size)))
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}
