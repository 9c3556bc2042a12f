package memspec

// Special values of a memory block's backing (the config's memory.backing,
// pmem.Spec.Backing); anything else is the absolute path of a file or a
// device-dax device.
const (
	BackingAnonymous = "anonymous" // private to the VMM process: MAP_ANONYMOUS
	BackingMemfd     = "memfd"     // an anonymous file (memfd_create); survives exec when its descriptor is inherited
)

// IsPathBacking reports whether backing names a file or device rather than
// one of the special values ("" is no backing at all).
func IsPathBacking(backing string) bool {
	return backing != "" && backing != BackingAnonymous && backing != BackingMemfd
}
