package state

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLeftovers proves the temporary files a killed WriteFile leaves are
// found beside their target only, read with the decoder (a cut-short one
// is refused as truncated, a complete one decodes), and that the note
// gives an mv a shell can run even for a path with a space.
func TestLeftovers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state dir")
	require.NoError(t, os.Mkdir(dir, 0o700))
	path := filepath.Join(dir, "vm.state")
	require.Empty(t, Leftovers(path))
	require.Empty(t, LeftoverNote(path))

	good, err := namedFile(t, "vm").Encode()
	require.NoError(t, err)
	complete := filepath.Join(dir, ".vm.state.tmp-1")
	partial := filepath.Join(dir, ".vm.state.tmp-2")
	require.NoError(t, os.WriteFile(complete, good, 0o600))
	require.NoError(t, os.WriteFile(partial, good[:40], 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".other.state.tmp-3"), good, 0o600))

	l := Leftovers(path)
	require.Len(t, l, 2)
	assert.Equal(t, complete, l[0].Path)
	require.NoError(t, l[0].Err)
	assert.Equal(t, "vm", l[0].File.Header.VMName)
	assert.Equal(t, partial, l[1].Path)
	assert.ErrorIs(t, l[1].Err, ErrTruncated)

	note := LeftoverNote(path)
	t.Log(note)
	assert.Contains(t, note, `it is complete and valid (a state file of VM "vm"`)
	assert.Contains(t, note, "\n  mv '"+complete+"' '"+path+"'\n")
	assert.Contains(t, note, partial+" is beside it, left by a save killed while writing it: it is not usable")
}
