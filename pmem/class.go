package pmem

import (
	"errors"
	"fmt"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// Needs is the least class of memory the mode accepts: reboot needs
// SurvivesKexec, restart needs SurvivesRestart (or better), none accepts
// anything.
func Needs(mode memspec.Mode) Class {
	switch mode.OrDefault() {
	case memspec.ModeReboot:
		return SurvivesKexec
	case memspec.ModeRestart:
		return SurvivesRestart
	default:
		return Volatile
	}
}

// Class is what a memory backing survives. Classes are ordered:
// SurvivesKexec memory also survives a VMM restart.
type Class string

const (
	// Volatile memory dies with the VMM process: anonymous memory, or
	// anything mapped private.
	Volatile Class = "volatile"
	// SurvivesRestart memory outlives the VMM process but not the host
	// kernel: tmpfs and /dev/shm files, hugetlbfs files, memfd (when its
	// descriptor is handed to the new VMM), files on ordinary filesystems
	// (their page cache is gone after a kexec).
	SurvivesRestart Class = "survives-restart"
	// SurvivesKexec memory outlives the host kernel: device-dax, files on a
	// DAX filesystem on persistent memory, and tmpfs/shm files whose block
	// explicitly declares preserved_across_kexec = true.
	SurvivesKexec Class = "survives-kexec"
)

func (c Class) rank() int {
	switch c {
	case Volatile:
		return 1
	case SurvivesRestart:
		return 2
	case SurvivesKexec:
		return 3
	}
	return 0 // unknown: satisfies nothing
}

// AtLeast reports whether memory of class c is good enough where need is
// required.
func (c Class) AtLeast(need Class) bool { return c.rank() >= need.rank() }

// phrase is the class in words, for messages: "is volatile".
func (c Class) phrase() string {
	switch c {
	case Volatile:
		return "is volatile"
	case SurvivesRestart:
		return "survives a VMM restart but not a host kexec"
	case SurvivesKexec:
		return "survives a host kexec"
	}
	return "is of unknown durability"
}

// ErrModeRefused is wrapped by the error of Open and Check when a backing
// cannot preserve guest RAM across what the VM's mode must survive.
var ErrModeRefused = errors.New("memory backing cannot honour the VM's mode")

// Allows reports whether mode accepts memory of class c.
func Allows(mode memspec.Mode, c Class) bool { return c.AtLeast(Needs(mode)) }

// modeVerdict returns "" when b honours mode, or why not and what to use
// instead (without the block prefix).
func modeVerdict(mode memspec.Mode, b *Backing) string {
	mode = mode.OrDefault()
	if Allows(mode, b.Class) {
		return ""
	}
	var need, instead string
	switch mode {
	case memspec.ModeReboot:
		need = "mode reboot needs memory that survives a host kexec"
		instead = "use a device-dax namespace (/dev/daxX.Y, ndctl create-namespace -m devdax) or a file on a DAX filesystem on persistent memory (mount -o dax=always)"
		switch b.Kind {
		case KindTmpfs:
			instead += "; or, only if this host really preserves tmpfs memory across kexec (PKRAM, Live Update memfd preservation), say so with preserved_across_kexec = true in this [[memory]] block"
		case KindHugetlbfs:
			need += " (hugetlbfs pages are freed by a kexec)"
		case KindFile:
			need += " (a file on an ordinary filesystem lives in the page cache, which a kexec drops)"
		case KindFsDax:
			need += fmt.Sprintf(" (this file is on a DAX filesystem, but %s)", b.daxWhyNot)
		}
	case memspec.ModeRestart:
		need = "mode restart needs memory that outlives the VMM process"
		instead = `use backing = "memfd", a shared file on /dev/shm or another tmpfs (create = true), a hugetlbfs file, or persistent memory`
		if b.Kind == KindAnonymous {
			need += " (anonymous memory dies with the process, shared or not)"
		}
	}
	return fmt.Sprintf("%s: %s; %s", b.Class.phrase(), need, instead)
}
