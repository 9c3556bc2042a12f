// Package lab builds and runs the pmvm test lab described in
// README.md ("How the lab works"): a QEMU TCG "lab host" (L1) with nested KVM (kvm-amd)
// in which pmvm boots a Linux guest (L2).
//
// Everything the lab needs comes from Debian's package registry and is cached
// under <repo>/.cache (or $PMVM_CACHE): .deb files, their extracted trees, the
// vmlinux ELF, cpio images, the static pmvm binary and console logs. A warm
// cache does no network I/O.
//
// Where things are:
//   - debian.go, kernel.go, vmlinux.go, cpio.go: packages, kernels and
//     modules, the PVH vmlinux, initramfs images;
//   - dynamic.go: Debian's dynamic programs (qemu-ga, ndctl, daxctl) with
//     the libraries ldd lists;
//   - images.go, standard.go: the guest (L2) and lab host (L1) images and
//     the standard labs (boot, device-dax, S3);
//   - scripts/*.sh, scripts.go: every shell script of the lab (inits,
//     /lab/lib.sh, the scenarios), embedded, with their parameters set by
//     ShellVars; make test-shellcheck checks them;
//   - guestinit.go: guest /init builders (reports, qemu-ga, the pattern
//     daemon, the resume loop); the guest programs are in qa/guestbin;
//   - scenario.go, reboot.go, update.go: the lab host scenarios of the
//     tests and the labs they run in;
//   - qemu.go: running QEMU with timeouts and console matching;
//     agent.go: the guest agent (pmvm's own guestpm.Client) for plain-QEMU
//     runs; QEMU's monitor is qa/qmp;
//   - check.go: following a scenario's transcript and judging it;
//     updateevents.go, updatecheck.go: the update lab's console as typed
//     events, and their judges.
package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pmvm/pmvm/pmem/flock"
)

// CacheEnv names the environment variable that overrides the cache directory.
const CacheEnv = "PMVM_CACHE"

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("lab: no go.mod found above the working directory; run from inside the pmvm repository")
		}
		dir = parent
	}
}

// CacheDir returns the cache root ($PMVM_CACHE, else <repo>/.cache), creating it.
func CacheDir() (string, error) {
	dir := os.Getenv(CacheEnv)
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, ".cache")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("lab: create cache dir: %w", err)
	}
	return dir, nil
}

// lockCache takes an exclusive flock on <cache>/.lock so that concurrent test
// binaries (go test ./qa/... runs packages in parallel) do not download or
// build the same artifact at the same time. The returned func releases it.
func lockCache(cache string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(cache, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: open cache lock: %w", err)
	}
	if err := flock.Exclusive(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("lab: lock cache: %w", err)
	}
	return func() { f.Close() }, nil // closing drops the lock
}

// writeFileAtomic writes data to path via a temporary file and a rename, so a
// crash never leaves a half-written file under the final name.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
