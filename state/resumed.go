package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// ResumedSuffix marks a state file whose guest runs again. Such a file is
// never resumed: the guest's memory has moved on since it was written, and
// resuming the old device and CPU state over it would corrupt the guest.
const ResumedSuffix = ".resumed-"

// MoveAsideResumed renames the state file at path, whose guest now runs
// again, to path.resumed-<UTC time> (durably), so that no later resume or
// restore can pick it up. pmvm run --incoming and pmvm host restore both
// call it; if the other moved it first, the name it got is returned.
func MoveAsideResumed(path string) (string, error) {
	to := path + ResumedSuffix + time.Now().UTC().Format("20060102T150405.000Z")
	err := os.Rename(path, to)
	if errors.Is(err, fs.ErrNotExist) {
		if prev := LastResumed(path); prev != "" {
			return prev, nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("move the resumed state file %s aside: %w", path, err)
	}
	if err := SyncDir(filepath.Dir(to)); err != nil {
		return to, fmt.Errorf("moved %s to %s, but fsync of its directory failed: %w", path, to, err)
	}
	return to, nil
}

// LastResumed returns the newest path.resumed-* file, or "".
func LastResumed(path string) string {
	m, _ := filepath.Glob(globEscape(path) + ResumedSuffix + "*")
	if len(m) == 0 {
		return ""
	}
	sort.Strings(m) // the UTC timestamps sort by time
	return m[len(m)-1]
}

// globEscape quotes the glob metacharacters of a literal path.
func globEscape(p string) string {
	out := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '*', '?', '[', '\\':
			out = append(out, '\\')
		}
		out = append(out, p[i])
	}
	return string(out)
}
