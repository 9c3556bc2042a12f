package lab

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// AddHostBinary copies a program of this machine into im at imagePath. A
// static program goes alone; a dynamic one (a Go test binary built with
// cgo, say) goes with every library `ldd` lists and the dynamic loader,
// taken from this machine (Debian 12, like the lab's userland).
func (l *Lab) AddHostBinary(im *Image, hostPath, imagePath string) error {
	interp, err := elfInterp(hostPath)
	if err != nil {
		return fmt.Errorf("lab: %s: %w", hostPath, err)
	}
	im.HostFile(strings.TrimPrefix(imagePath, "/"), hostPath, 0o755)
	if interp == "" {
		return nil
	}
	cmd := exec.Command("ldd", hostPath)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("lab: ldd %s: %w\n%s", hostPath, err, out)
	}
	r, err := ParseLdd(string(out))
	if err != nil {
		return fmt.Errorf("lab: %s: %w", hostPath, err)
	}
	if len(r.Missing) > 0 {
		return fmt.Errorf("lab: %s needs libraries this machine lacks: %v", hostPath, r.Missing)
	}
	_, err = addLibs(im, r.Libs, interp)
	return err
}

// elfInterp returns the program's PT_INTERP ("" for a static program).
func elfInterp(p string) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(b, 0); err != nil {
			return "", fmt.Errorf("read PT_INTERP: %w", err)
		}
		return strings.TrimRight(string(b), "\x00"), nil
	}
	return "", nil
}
