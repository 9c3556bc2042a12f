package pmem

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// SameMemory explains how the backing found now differs from the one a
// state file recorded; no lines means it is the very same memory. A
// device-dax namespace is known by its uuid (its device number and node can
// change across a kexec); a file by its inode and size, and also by its
// filesystem's device number except on fsdax, whose block device may be
// numbered differently after a kexec.
func (saved Identity) SameMemory(now Identity) []string {
	var d []string
	if saved.Kind != now.Kind {
		return []string{fmt.Sprintf("kind: saved %s, now %s", saved.Kind, now.Kind)}
	}
	if saved.Size != now.Size {
		d = append(d, fmt.Sprintf("size: saved %d bytes, now %d", saved.Size, now.Size))
	}
	switch saved.Kind {
	case KindDevDax:
		switch {
		case saved.DaxUUID != "" && saved.DaxUUID != now.DaxUUID:
			d = append(d, fmt.Sprintf("namespace uuid: saved %s, now %q: this is another namespace", saved.DaxUUID, now.DaxUUID))
		case saved.DaxUUID == "" && saved.Rdev != now.Rdev:
			d = append(d, fmt.Sprintf("device number: saved %#x, now %#x, and the namespace has no uuid to tell them apart", saved.Rdev, now.Rdev))
		}
	case KindAnonymous, KindMemfd:
		d = append(d, fmt.Sprintf("%s memory does not outlive the process that mapped it", saved.Kind))
	default:
		if saved.Ino != now.Ino {
			d = append(d, fmt.Sprintf("inode: saved %d, now %d: the file was replaced", saved.Ino, now.Ino))
		}
		if saved.Kind != KindFsDax && saved.Dev != now.Dev {
			d = append(d, fmt.Sprintf("filesystem device: saved %#x, now %#x", saved.Dev, now.Dev))
		}
	}
	return d
}

// GenerationKey names the backing's generation record (package state),
// which spends a state file on the memory rather than on its name: a
// device-dax namespace by its uuid (its device number can change across a
// kexec), else by its device number; a file by its filesystem's device
// and its inode. Anonymous and memfd memory outlives no process: "".
func (id Identity) GenerationKey() string {
	switch id.Kind {
	case KindAnonymous, KindMemfd:
		return ""
	case KindDevDax:
		if id.DaxUUID != "" {
			return "devdax-" + strings.ToLower(id.DaxUUID)
		}
		return fmt.Sprintf("devdax-%d:%d", unix.Major(id.Rdev), unix.Minor(id.Rdev))
	}
	return fmt.Sprintf("%s-%d:%d-%d", id.Kind, unix.Major(id.Dev), unix.Minor(id.Dev), id.Ino)
}
