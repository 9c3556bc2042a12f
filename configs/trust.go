package configs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// What a host update trusts: the host config says where the VM configs,
// the state files (which pmvm resumes over guest memory) and the hooks
// (which run as root at boot) are. Anyone who can write one of them can
// run code as root or resume a forged state over a guest, so each must be
// owned by root (or the user pmvm runs as) and writable by nobody else, as
// must every directory above it (a world-writable directory with the
// sticky bit, such as /tmp, only lets others remove their own entries).

// TrustError says which path cannot be trusted, why, and how to fix it.
type TrustError struct {
	What string // "host config", "state_dir", "hooks.pre-kexec", ...
	Path string
	Msg  string
}

func (e *TrustError) Error() string { return fmt.Sprintf("%s %s: %s", e.What, e.Path, e.Msg) }

// CheckTrust checks the ownership and mode of the host config file at path,
// of vm_dir, state_dir (or its nearest existing parent, when it is still to
// be created) and of every hook's program, and of the directories above
// each. It returns every problem, joined.
func (h *Host) CheckTrust(path string) error {
	euid := os.Geteuid()
	var errs []error
	check := func(what, p string) {
		errs = append(errs, checkTrusted(what, p, euid)...)
	}
	if path != "" {
		check("host config", path)
	}
	check("vm_dir", h.VMDir)
	check("state_dir", h.StateDir)
	for _, phase := range Phases {
		if hk := h.Hooks.Get(phase); hk != nil && len(hk.Command) > 0 {
			check("hooks."+phase, hk.Command[0])
		}
	}
	return errors.Join(errs...)
}

// checkTrusted checks p, if it exists, and every existing directory above
// it.
func checkTrusted(what, p string, euid int) []error {
	abs, err := filepath.Abs(p)
	if err != nil {
		return []error{&TrustError{what, p, err.Error()}}
	}
	// A symlink is judged by what it points to: that is what gets read.
	if resolved, err := filepath.EvalSymlinks(abs); err == nil {
		abs = resolved
	}
	var errs []error
	for cur := abs; ; cur = filepath.Dir(cur) {
		fi, err := os.Stat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Still to be created (state_dir) or missing (which the plan
			// reports): the existing directories above decide who could.
		case err != nil:
			errs = append(errs, &TrustError{what, p, fmt.Sprintf("cannot look at %s: %v", cur, err)})
		default:
			if msg := untrusted(cur, fi, euid, cur == abs); msg != "" {
				errs = append(errs, &TrustError{what, p, msg})
			}
		}
		if cur == "/" || cur == "." {
			return errs
		}
	}
}

// untrusted says why fi (at path p) lets someone other than root or euid
// change what pmvm reads there, with the command that fixes it; "" if
// nothing does. self is the checked path itself (not a parent).
func untrusted(p string, fi fs.FileInfo, euid int, self bool) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	where := p
	if !self {
		where = "its parent directory " + p
	}
	if uid := int(st.Uid); uid != 0 && uid != euid {
		return fmt.Sprintf("%s is owned by uid %d, not root or the user pmvm runs as (uid %d): that user could change it; chown root %s", where, uid, euid, p)
	}
	mode := fi.Mode()
	sticky := fi.IsDir() && mode&fs.ModeSticky != 0
	if mode.Perm()&0o002 != 0 && !sticky {
		return fmt.Sprintf("%s is writable by every user (mode %04o): anyone could change it; chmod o-w %s", where, mode.Perm(), p)
	}
	if mode.Perm()&0o020 != 0 && st.Gid != 0 && !sticky {
		return fmt.Sprintf("%s is writable by group %d (mode %04o): its members could change it; chmod g-w %s", where, st.Gid, mode.Perm(), p)
	}
	return ""
}
