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
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/acpi"
	"github.com/pmvm/pmvm/vmm/x86"
	"github.com/pmvm/pmvm/vmm/x86/x86test"
)

// WakeVector, the outputs and the code come from x86test, shared with the
// tests that run the same tiny guest.
const (
	WakeVector    = x86test.WakeVector
	ResumeOutput  = x86test.ResumeOutput
	SuspendOutput = x86test.SuspendOutput
)

// SuspendingKernel returns x86test's self-suspending kernel for a 1-vCPU
// machine (the FACS address depends on the vCPU count).
func SuspendingKernel() ([]byte, error) {
	tables, err := acpi.Build(vmm.ACPIConfig(1), x86.ACPITablesAddr)
	if err != nil {
		return nil, err
	}
	return x86test.SuspendingKernel(tables.FACS), nil
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
// is allocated; the tiny guest writes its own resume code). With
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
`, kernel, memspec.FormatSize(size), backing, filepath.Join(dir, "agent.sock"), filepath.Join(dir, "control.sock"))
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
