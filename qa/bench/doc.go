// Package bench measures what the host-update path costs: pmvm's save and
// resume of a suspended guest (reboot mode, RAM in a shared /dev/shm file
// that is never copied) beside its closest peer, QEMU 7.2 migrating to a
// file with x-ignore-shared and the same kind of RAM backing, in the same
// run, at 256 MiB, 1 GiB and 4 GiB of guest RAM.
//
// The benchmarks live in bench_test.go and run only with -bench (make
// bench); `go test ./...` compiles them and runs nothing but the report
// parser's unit test. This file's package holds their parts: the tiny
// guest (tinyguest.go), a pmvm driver on vmm/lifecycle, the functions
// pmvm run and pmvm save use (pmvm.go), and a QEMU driver (qemu.go) on
// the tests' QMP client (qa/qmp). ./report turns the benchmark output
// into side-by-side tables. The benchmarks fail (never
// skip) when /dev/kvm, a tmpfs /dev/shm or qemu-system-x86_64 is missing.
//
// What each number is:
//
//   - pmvm save (BenchmarkSave): from the save request for a guest that is
//     already in S3 (Machine.SaveState) until the state file is durable
//     (written to a temporary file, fsync'd, renamed, directory fsync'd).
//   - pmvm resume (BenchmarkResume): from vmm.CheckIncoming (read and check
//     the state file and the backing) through vmm.New (map the backing,
//     create the VM, vCPUs and devices), Machine.Restore and Machine.Wake
//     until the guest writes its first byte to COM1 from the code at its
//     FACS waking vector. The cost of exec'ing a new pmvm process and
//     parsing its config is not included.
//   - pmvm resume as a process (BenchmarkResumeProcess): from exec of
//     `pmvm run CONFIG --incoming STATE` (the binary built by go build, as
//     make build does) until the guest's first byte reaches its stdout.
//     This adds what BenchmarkResume leaves out (exec, Go runtime start,
//     config, sockets) and is the number to hold against QEMU's resume.
//   - QEMU save (BenchmarkQEMUSave): QEMU was started paused (-S) on the
//     same kind of backing (-machine pc -accel kvm, -nodefaults, 1 vCPU,
//     max-bandwidth lifted from its 32 MiB/s default); from handing it a
//     pipe (getfd) and `migrate fd:` until the MIGRATION event says
//     completed and the bytes read from the pipe are durable in the state
//     file (temporary file, fsync, rename, directory fsync: the write pmvm
//     does, and what libvirt's `virsh save` does with its iohelper).
//     Not `migrate exec:cat > FILE`: QEMU 7.2 has no file: URI, its exec
//     channel SIGTERMs the child if it has not exited the moment the
//     stream closes (so cat can be cut short), and nothing would fsync.
//   - QEMU resume (BenchmarkQEMUResume): from exec of a new QEMU (-S
//     -incoming defer, same backing) until the RESUME event after `cont`,
//     the incoming migration having completed. Includes QEMU's process
//     start and machine creation (reported apart as start-ms/op); load-ms/op
//     is the part from handing QEMU the state file (getfd, migrate-incoming
//     fd:) to the RESUME event.
//
// Every timed region is reported as its mean (ms/op, and ns/op) and its
// median iteration (p50-ms); parts of it likewise (load-ms/op,
// load-p50-ms, ...). The report tables use the medians: a disk fsync or an
// RCU grace period now and then makes a mean jumpy on this host. Every
// benchmark also reports state-bytes (the state file's size) and
// resident-MiB (how much of the backing is allocated).
//
// The "Touched" variants fill every page of the backing with a pattern
// beforehand (resident-MiB shows it): resume must not depend on how much
// of the guest's RAM is resident. BenchmarkQEMUSaveCopyRAM and
// BenchmarkQEMUResumeCopyRAM run QEMU without x-ignore-shared on a touched
// 256 MiB guest: the RAM copy that pmvm does not do.
package bench
