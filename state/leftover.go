package state

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Leftover is a temporary file a killed WriteFile left beside its target
// (".NAME.tmp-*"): the save was killed after creating it and before the
// rename. It may be complete (killed between the fsync and the rename) or
// cut short. pmvm never uses one by itself: only the operator can tell
// whether it is the VM's last save.
type Leftover struct {
	Path string
	File *File // decoded and checksum-verified; nil when Err is set
	Err  error // why it is not a usable state file
}

// Leftovers reads every temporary file WriteFile left beside path, oldest
// name first, with the state decoder (checksum included).
func Leftovers(path string) []Leftover {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	m, _ := filepath.Glob(filepath.Join(globEscape(dir), globEscape("."+base+".tmp-")+"*"))
	sort.Strings(m)
	var out []Leftover
	for _, p := range m {
		f, err := ReadFile(p)
		out = append(out, Leftover{Path: p, File: f, Err: err})
	}
	return out
}

// LeftoverNote explains the temporary files left beside the missing state
// file path, for the refusal of a resume; "" when there are none.
func LeftoverNote(path string) string {
	var notes []string
	for _, l := range Leftovers(path) {
		if l.Err != nil {
			notes = append(notes, fmt.Sprintf("a temporary state file %s is beside it, left by a save killed while writing it: it is not usable (%v); remove it", l.Path, l.Err))
			continue
		}
		h := l.File.Header
		notes = append(notes, fmt.Sprintf("a temporary state file %s is beside it, left by a save killed before the rename that would have made it %s: it is complete and valid (a state file of VM %q, saved %s, checksum correct). pmvm never uses it by itself: if it is that VM's last save (the guest has not run since), make it the state file with\n  mv %s %s\nand resume again; if not, remove it",
			l.Path, path, h.VMName, h.Created.UTC().Format(time.RFC3339), shellQuote(l.Path), shellQuote(path)))
	}
	return strings.Join(notes, "\n")
}

// shellQuote quotes s for a shell command line only when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./+=:@,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
