package state

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGenerationRecords proves a record reads back what was set (durably
// replaced, mode 0600), a missing one is unknown rather than 0, a corrupt
// one is refused saying how to recover, and a record name that could be a
// path is refused.
func TestGenerationRecords(t *testing.T) {
	old := GenerationDir
	GenerationDir = filepath.Join(t.TempDir(), "gen")
	t.Cleanup(func() { GenerationDir = old })

	_, known, err := CurrentGeneration("fsdax-259:0-12")
	require.NoError(t, err)
	assert.False(t, known)
	require.NoError(t, SetGeneration("fsdax-259:0-12", 5))
	require.NoError(t, SetGeneration("fsdax-259:0-12", 6))
	gen, known, err := CurrentGeneration("fsdax-259:0-12")
	require.NoError(t, err)
	assert.True(t, known)
	assert.Equal(t, uint64(6), gen)
	st, err := os.Stat(GenerationPath("fsdax-259:0-12"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	require.NoError(t, os.WriteFile(GenerationPath("bad"), []byte("x\n"), 0o600))
	_, _, err = CurrentGeneration("bad")
	require.ErrorContains(t, err, "is corrupt")
	require.ErrorContains(t, err, "rm "+GenerationPath("bad"))

	for _, k := range []string{"", "../x", "a/b", ".hidden", "UPPER"} {
		_, _, err := CurrentGeneration(k)
		assert.ErrorContains(t, err, "not valid", k)
		assert.ErrorContains(t, SetGeneration(k, 1), "not valid", k)
	}
}
