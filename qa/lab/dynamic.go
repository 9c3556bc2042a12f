package lab

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Debian packages of the dynamic programs the lab copies into its images.
const (
	// GuestAgentPackage provides /usr/sbin/qemu-ga (QEMU 7.2 in Debian 12).
	GuestAgentPackage = "qemu-guest-agent"
	// NdctlPackage provides /usr/bin/ndctl; DaxctlPackage /usr/bin/daxctl.
	NdctlPackage  = "ndctl"
	DaxctlPackage = "daxctl"
)

// LibDir is where AddDynamic puts shared libraries in an image: Debian's
// multiarch directory, which Debian's ld.so searches by default (no
// ld.so.cache needed).
const LibDir = "lib/x86_64-linux-gnu"

// LddLib is one line of ldd output that resolved to a file.
type LddLib struct {
	Soname string // as the binary names it, e.g. libglib-2.0.so.0
	Path   string // where ldd found it
}

// LddResult is parsed ldd output.
type LddResult struct {
	Libs    []LddLib // resolved libraries (not the vDSO, not the loader)
	Interp  string   // the dynamic loader, e.g. /lib64/ld-linux-x86-64.so.2
	Missing []string // sonames ldd reported "not found"
}

// ParseLdd parses the output of `ldd BINARY`:
//
//	linux-vdso.so.1 (0x...)                    the vDSO: skipped
//	libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)
//	libiniparser.so.1 => not found
//	/lib64/ld-linux-x86-64.so.2 (0x...)        the loader
func ParseLdd(out string) (LddResult, error) {
	var r LddResult
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if strings.Contains(line, "not a dynamic executable") {
			return r, fmt.Errorf("ldd: %s", line)
		}
		name, rest, arrow := strings.Cut(line, " => ")
		if !arrow {
			f := strings.Fields(line)[0]
			if strings.HasPrefix(f, "/") {
				r.Interp = f
			}
			continue
		}
		name = strings.TrimSpace(name)
		rest = strings.TrimSpace(rest)
		if strings.HasPrefix(rest, "not found") {
			r.Missing = append(r.Missing, name)
			continue
		}
		p := strings.Fields(rest)
		if len(p) == 0 || !strings.HasPrefix(p[0], "/") {
			return r, fmt.Errorf("ldd: cannot parse %q", line)
		}
		r.Libs = append(r.Libs, LddLib{Soname: name, Path: p[0]})
	}
	return r, sc.Err()
}

// ParseDepends returns the package names of a Debian Depends field, the
// first of each alternative, without version constraints or arch
// qualifiers: "libc6 (>= 2.34), libfoo1 | libbar1, libz:amd64" gives
// [libc6 libfoo1 libz].
func ParseDepends(field string) []string {
	var out []string
	for _, dep := range strings.Split(field, ",") {
		alt, _, _ := strings.Cut(dep, "|")
		alt = strings.TrimSpace(alt)
		if i := strings.IndexAny(alt, " ("); i >= 0 {
			alt = alt[:i]
		}
		alt, _, _ = strings.Cut(alt, ":")
		if alt != "" {
			out = append(out, alt)
		}
	}
	return out
}

// sonamePackage guesses the Debian package of a shared library from its
// soname by policy 8.1 (libfoo.so.1 -> libfoo1, libjson-c.so.5 ->
// libjson-c5; libfoo-2.0.so.0 -> libfoo-2.0-0).
func sonamePackage(soname string) string {
	base, ver, ok := strings.Cut(soname, ".so.")
	if !ok {
		return ""
	}
	if base != "" && base[len(base)-1] >= '0' && base[len(base)-1] <= '9' {
		return strings.ToLower(base + "-" + ver)
	}
	return strings.ToLower(base + ver)
}

// Control returns a field of a package's control data (dpkg-deb -f).
func (l *Lab) Control(pkg, field string) (string, error) {
	var out []byte
	err := l.locked(func() error {
		name, err := l.resolve(pkg)
		if err != nil {
			return err
		}
		deb, err := l.download(name)
		if err != nil {
			return err
		}
		out, err = l.run("/", "dpkg-deb", "-f", deb, field)
		return err
	})
	return strings.TrimSpace(string(out)), err
}

// DynamicFiles is what AddDynamic put into an image.
type DynamicFiles struct {
	Binaries []string // image paths of the programs
	Libs     []string // image paths of the libraries and the loader
	Packages []string // library packages downloaded because the host lacked a library
}

// AddDynamic copies programs of a Debian package (bins: paths inside the
// package, e.g. "usr/sbin/qemu-ga") into im at the same paths, with every
// shared library `ldd` lists for them and the dynamic loader.
//
// Libraries come from this machine (Debian 12, the same release as the
// package) when it has them. For each library ldd reports "not found", the
// package's library dependencies (Depends) are downloaded and extracted
// into the cache, their lib directories put on LD_LIBRARY_PATH and ldd run
// again; a few rounds cover libraries that need further libraries.
// Libraries land in /lib/x86_64-linux-gnu under their soname (symlinks
// resolved), the loader at the path the binary asks for.
func (l *Lab) AddDynamic(im *Image, pkg string, bins ...string) (*DynamicFiles, error) {
	root, err := l.Package(pkg)
	if err != nil {
		return nil, err
	}
	var libDirs []string
	fetched := map[string]bool{}
	depsOf := map[string][]string{}
	queue := []string{pkg} // packages whose Depends may supply missing libraries
	res := &DynamicFiles{}
	libs := map[string]string{} // soname -> host path
	interp := ""
	for round := 0; ; round++ {
		var missing []string
		for _, b := range bins {
			bin := filepath.Join(root, b)
			if !exists(bin) {
				return nil, fmt.Errorf("lab: package %s has no %s", pkg, b)
			}
			cmd := exec.Command("ldd", bin)
			cmd.Env = append(os.Environ(), "LC_ALL=C", "LD_LIBRARY_PATH="+strings.Join(libDirs, ":"))
			out, err := cmd.CombinedOutput()
			if err != nil {
				return nil, fmt.Errorf("lab: ldd %s: %w\n%s", bin, err, out)
			}
			r, err := ParseLdd(string(out))
			if err != nil {
				return nil, fmt.Errorf("lab: %s: %w", bin, err)
			}
			missing = append(missing, r.Missing...)
			for _, lib := range r.Libs {
				libs[lib.Soname] = lib.Path
			}
			if r.Interp != "" {
				interp = r.Interp
			}
		}
		if len(missing) == 0 {
			break
		}
		if round == 4 {
			return nil, fmt.Errorf("lab: %s: libraries still not found after downloading %v: %v", pkg, res.Packages, missing)
		}
		// Candidates: library Depends of the packages seen so far; the
		// ones whose name matches a missing soname first, else all.
		var cands []string
		for _, p := range queue {
			if _, ok := depsOf[p]; !ok {
				f, err := l.Control(p, "Depends")
				if err != nil {
					return nil, err
				}
				depsOf[p] = ParseDepends(f)
			}
			for _, d := range depsOf[p] {
				if strings.HasPrefix(d, "lib") && d != "libc6" && !fetched[d] {
					cands = append(cands, d)
				}
			}
		}
		want := map[string]bool{}
		for _, m := range missing {
			want[sonamePackage(m)] = true
		}
		var pick []string
		for _, c := range cands {
			if want[c] {
				pick = append(pick, c)
			}
		}
		if len(pick) == 0 {
			pick = cands
		}
		if len(pick) == 0 {
			return nil, fmt.Errorf("lab: %s: ldd finds no %v on this machine and no library dependency of %v is left to download", pkg, missing, queue)
		}
		l.Logf("lab: %s needs %v: fetching %v", pkg, missing, pick)
		for _, p := range pick {
			fetched[p] = true
			dir, err := l.Package(p)
			if err != nil {
				return nil, err
			}
			res.Packages = append(res.Packages, p)
			queue = append(queue, p)
			for _, sub := range []string{"usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"} {
				if d := filepath.Join(dir, sub); exists(d) {
					libDirs = append(libDirs, d)
				}
			}
		}
	}
	if interp == "" {
		return nil, fmt.Errorf("lab: ldd names no dynamic loader for %v of %s", bins, pkg)
	}
	for _, b := range bins {
		im.HostFile(b, filepath.Join(root, b), 0o755)
		res.Binaries = append(res.Binaries, "/"+clean(b))
	}
	var list []LddLib
	for soname, p := range libs {
		list = append(list, LddLib{Soname: soname, Path: p})
	}
	copied, err := addLibs(im, list, interp)
	if err != nil {
		return nil, err
	}
	res.Libs = append(res.Libs, copied...)
	return res, nil
}

// addLibs copies libraries into im's LibDir under their sonames (symlinks
// resolved) and the dynamic loader at the path programs ask for; it
// returns their in-image paths, sorted, the loader last.
func addLibs(im *Image, libs []LddLib, interp string) ([]string, error) {
	libs = slices.Clone(libs)
	sort.Slice(libs, func(i, j int) bool { return libs[i].Soname < libs[j].Soname })
	var out []string
	for _, lib := range libs {
		real, err := filepath.EvalSymlinks(lib.Path)
		if err != nil {
			return nil, fmt.Errorf("lab: library %s: %w", lib.Path, err)
		}
		p := path.Join(LibDir, lib.Soname)
		im.HostFile(p, real, 0o755)
		out = append(out, "/"+p)
	}
	real, err := filepath.EvalSymlinks(interp)
	if err != nil {
		return nil, fmt.Errorf("lab: loader %s: %w", interp, err)
	}
	im.HostFile(interp, real, 0o755)
	return append(out, interp), nil
}
