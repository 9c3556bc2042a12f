package pmem

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestSameMemory proves what counts as the same memory across a kexec:
// a dax namespace by uuid, a file by inode (and device, except fsdax).
func TestSameMemory(t *testing.T) {
	dax := Identity{Kind: KindDevDax, Path: "/dev/dax0.0", Rdev: 0xfc00000, Size: 192 << 20, Align: 2 << 20, DaxUUID: "a-b"}
	moved := dax
	moved.Path, moved.Rdev = "/dev/dax1.0", 0xfb00000
	assert.Empty(t, dax.SameMemory(moved), "renumbered node, same namespace")
	other := dax
	other.DaxUUID = "c-d"
	assert.Len(t, dax.SameMemory(other), 1)
	noUUID := dax
	noUUID.DaxUUID = ""
	assert.Len(t, noUUID.SameMemory(Identity{Kind: KindDevDax, Rdev: 1, Size: dax.Size}), 1)

	file := Identity{Kind: KindTmpfs, Dev: 5, Ino: 42, Size: 64 << 20}
	assert.Empty(t, file.SameMemory(file))
	replaced := file
	replaced.Ino = 43
	assert.Len(t, file.SameMemory(replaced), 1)
	bigger := file
	bigger.Size *= 2
	assert.Len(t, file.SameMemory(bigger), 1)

	fsdax := Identity{Kind: KindFsDax, Dev: 5, Ino: 42, Size: 64 << 20}
	renumbered := fsdax
	renumbered.Dev = 6
	assert.Empty(t, fsdax.SameMemory(renumbered))

	assert.Len(t, file.SameMemory(Identity{Kind: KindHugetlbfs}), 1)
	assert.NotEmpty(t, Identity{Kind: KindAnonymous}.SameMemory(Identity{Kind: KindAnonymous}))
}

// A backing's generation record is named by what stays the same for its
// memory: a namespace's uuid (whatever its device number), a file's device
// and inode; memory that outlives no process has none.
func TestGenerationKey(t *testing.T) {
	require.Equal(t, "devdax-"+testUUID, Identity{Kind: KindDevDax, Rdev: unix.Mkdev(252, 0), DaxUUID: strings.ToUpper(testUUID)}.GenerationKey())
	require.Equal(t, "devdax-252:3", Identity{Kind: KindDevDax, Rdev: unix.Mkdev(252, 3)}.GenerationKey())
	require.Equal(t, "fsdax-259:1-77", Identity{Kind: KindFsDax, Dev: unix.Mkdev(259, 1), Ino: 77}.GenerationKey())
	require.Equal(t, "tmpfs-0:27-5", Identity{Kind: KindTmpfs, Dev: unix.Mkdev(0, 27), Ino: 5}.GenerationKey())
	require.Empty(t, Identity{Kind: KindMemfd}.GenerationKey())
	require.Empty(t, Identity{Kind: KindAnonymous}.GenerationKey())
}
