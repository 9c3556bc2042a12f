package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMoveAsideResumed proves a resumed state file leaves its name for
// good (so nothing resumes it again), that the second of two movers (pmvm
// run --incoming and pmvm host restore) gets the first one's name instead
// of an error, that a name with glob characters is taken literally, and
// that a file nobody moved and that is gone is an error.
func TestMoveAsideResumed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "web[1]*.state")
	require.NoError(t, os.WriteFile(path, []byte("x"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "other.state"+ResumedSuffix+"20990101T000000.000Z"), nil, 0o600))

	to, err := MoveAsideResumed(path)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(to, path+ResumedSuffix), to)
	assert.NoFileExists(t, path)
	assert.FileExists(t, to)

	again, err := MoveAsideResumed(path)
	require.NoError(t, err)
	assert.Equal(t, to, again, "the second mover reports the first one's name")

	_, err = MoveAsideResumed(filepath.Join(dir, "never.state"))
	assert.ErrorContains(t, err, "never.state")
}
