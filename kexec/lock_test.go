package kexec

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A second host update or restore is refused while one holds the host lock,
// and the refusal names the holder; after release the lock is free again.
func TestHostLockRefusesASecondHolder(t *testing.T) {
	dir := t.TempDir()
	first, err := lockHost(dir, "update")
	require.NoError(t, err)
	_, err = lockHost(dir, "restore")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "another pmvm host update or restore is running")
	assert.Contains(t, err.Error(), "update")
	first.release()
	again, err := lockHost(dir, "restore")
	require.NoError(t, err)
	again.release()
}
