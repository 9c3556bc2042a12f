package lab

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// Debian package names the lab uses.
const (
	// Kernel61 is the metapackage of Debian 12's 6.1 kernel; it resolves to
	// a concrete linux-image-6.1.0-NN-amd64.
	Kernel61 = "linux-image-amd64"
	// Kernel612 is the metapackage of Debian 12's backported 6.12 kernel
	// (modules are .ko.xz); it resolves to linux-image-6.12.NNN+deb12-amd64.
	Kernel612 = "linux-image-6.12-amd64"
	// Busybox is the static busybox used as userland in L1 and L2.
	Busybox = "busybox-static"
)

// Lab owns the cache directory and knows how to fill it.
type Lab struct {
	Repo  string                        // repository root (holds go.mod)
	Cache string                        // cache root, <repo>/.cache or $PMVM_CACHE
	Logf  func(format string, a ...any) // progress messages; never nil

	aptUpdated bool
	mu         sync.Mutex // serializes cache mutations inside one process
}

// New finds the repository and the cache. logf may be nil.
func New(logf func(format string, a ...any)) (*Lab, error) {
	repo, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Lab{Repo: repo, Cache: cache, Logf: logf}, nil
}

// locked runs f holding both the in-process mutex and the cache flock.
func (l *Lab) locked(f func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	unlock, err := lockCache(l.Cache)
	if err != nil {
		return err
	}
	defer unlock()
	return f()
}

func (l *Lab) run(dir string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// aptUpdate runs `apt-get update` at most once per Lab.
func (l *Lab) aptUpdate() error {
	if l.aptUpdated {
		return fmt.Errorf("apt-get update already ran")
	}
	l.aptUpdated = true
	l.Logf("lab: apt-get update (package lists missing or stale)")
	_, err := l.run("/", "apt-get", "update", "-q")
	return err
}

// withAptRetry runs f; if it fails, runs apt-get update once and retries.
func (l *Lab) withAptRetry(f func() error) error {
	err := f()
	if err == nil {
		return nil
	}
	if uerr := l.aptUpdate(); uerr != nil {
		return fmt.Errorf("%w (and apt-get update: %v)", err, uerr)
	}
	return f()
}

var concreteKernelRe = regexp.MustCompile(`^\s*\|?Depends:\s*(linux-image-[0-9][^\s:]*)`)

// Resolve maps a kernel metapackage such as linux-image-amd64 or
// linux-image-6.12-amd64 to the concrete kernel package it depends on
// (linux-image-6.1.0-NN-amd64). A concrete kernel package (no linux-image-<n>
// dependency) and any other package resolve to themselves. The answer is remembered in <cache>/debs/<name>.resolved so a warm
// cache never asks apt again (and stays on the same kernel until the cache is
// cleared).
func (l *Lab) Resolve(name string) (string, error) {
	var res string
	err := l.locked(func() error {
		var err error
		res, err = l.resolve(name)
		return err
	})
	return res, err
}

func (l *Lab) resolve(name string) (string, error) {
	debs := filepath.Join(l.Cache, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", err
	}
	memo := filepath.Join(debs, name+".resolved")
	if b, err := os.ReadFile(memo); err == nil && len(bytes.TrimSpace(b)) > 0 {
		return string(bytes.TrimSpace(b)), nil
	}
	resolved := name
	if strings.HasPrefix(name, "linux-image-") {
		err := l.withAptRetry(func() error {
			out, err := l.run(debs, "apt-cache", "depends", name)
			if err != nil {
				return err
			}
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				if m := concreteKernelRe.FindStringSubmatch(sc.Text()); m != nil && m[1] != name {
					resolved = m[1]
					return nil
				}
			}
			if !bytes.HasPrefix(out, []byte(name)) {
				return fmt.Errorf("apt-cache depends %s: unexpected output:\n%s", name, out)
			}
			return nil // already concrete
		})
		if err != nil {
			return "", fmt.Errorf("lab: resolve %s: %w", name, err)
		}
	}
	l.Logf("lab: %s -> %s", name, resolved)
	return resolved, writeFileAtomic(memo, []byte(resolved+"\n"), 0o644)
}

// Package downloads (if needed) and extracts (if needed) a Debian package,
// returning the directory it was extracted into: <cache>/extract/<resolved>.
// Metapackages are resolved first (see Resolve).
func (l *Lab) Package(name string) (string, error) {
	var dir string
	err := l.locked(func() error {
		var err error
		dir, err = l.pkg(name)
		return err
	})
	return dir, err
}

func (l *Lab) pkg(name string) (string, error) {
	name, err := l.resolve(name)
	if err != nil {
		return "", err
	}
	dest := filepath.Join(l.Cache, "extract", name)
	if exists(dest) {
		return dest, nil
	}
	deb, err := l.download(name)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dest), "."+name+".tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	l.Logf("lab: dpkg-deb -x %s", filepath.Base(deb))
	if _, err := l.run(tmp, "dpkg-deb", "-x", deb, tmp); err != nil {
		return "", fmt.Errorf("lab: extract %s: %w", deb, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dest); err != nil {
		return "", err
	}
	return dest, nil
}

// download returns <cache>/debs/<name>_<version>_<arch>.deb, fetching it with
// `apt-get download` into a temporary directory first so an interrupted
// download never looks complete.
func (l *Lab) download(name string) (string, error) {
	debs := filepath.Join(l.Cache, "debs")
	if m, _ := filepath.Glob(filepath.Join(debs, name+"_*.deb")); len(m) > 0 {
		return m[len(m)-1], nil
	}
	tmp, err := os.MkdirTemp(debs, ".download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	// apt drops to user _apt for downloads; let it write here (it falls back
	// to an unsandboxed download with a warning otherwise).
	os.Chmod(tmp, 0o777)
	l.Logf("lab: apt-get download %s", name)
	err = l.withAptRetry(func() error {
		_, err := l.run(tmp, "apt-get", "download", "-q", name)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("lab: download %s: %w", name, err)
	}
	m, _ := filepath.Glob(filepath.Join(tmp, name+"_*.deb"))
	if len(m) != 1 {
		return "", fmt.Errorf("lab: apt-get download %s produced %d .deb files", name, len(m))
	}
	final := filepath.Join(debs, filepath.Base(m[0]))
	if err := os.Rename(m[0], final); err != nil {
		return "", err
	}
	return final, nil
}

// BusyboxBinary returns the path of the extracted static busybox.
func (l *Lab) BusyboxBinary() (string, error) {
	dir, err := l.Package(Busybox)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "bin", "busybox")
	if !exists(p) {
		return "", fmt.Errorf("lab: %s has no bin/busybox", dir)
	}
	return p, nil
}
