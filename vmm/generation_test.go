package vmm

import (
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/state"
)

// TestRestoreSpendsTheGenerationUnderTheLock proves the generation check is
// made again when the state is spent: two resumes of one state (say, the
// file and its copy) that both passed CheckIncoming before either held the
// memory cannot both run; the second to reach Restore is refused as
// already resumed. A backing whose record is gone cannot tell and goes
// ahead, recording the next generation; a file without generations (from
// before them) has none to spend.
func TestRestoreSpendsTheGenerationUnderTheLock(t *testing.T) {
	old := state.GenerationDir
	state.GenerationDir = filepath.Join(t.TempDir(), "generations")
	t.Cleanup(func() { state.GenerationDir = old })
	m := &Machine{log: zerolog.Nop()}

	const key = "tmpfs-0:27-42"
	require.NoError(t, state.SetGeneration(key, 3))
	gens := []state.Generation{{Block: "ram0", Key: key, Generation: 3}}
	for range 2 {
		_, err := checkGenerations(gens)
		require.NoError(t, err, "both resumes pass the early check")
	}
	require.NoError(t, m.spendGenerations(gens), "the first to hold the memory resumes")
	gen, known, err := state.CurrentGeneration(key)
	require.NoError(t, err)
	assert.True(t, known)
	assert.Equal(t, uint64(4), gen)
	err = m.spendGenerations(gens)
	require.Error(t, err, "the second is refused")
	assert.Contains(t, err.Error(), `it was already resumed: memory block "ram0" is at generation 4 (`+state.GenerationPath(key)+`) and this state was saved at generation 3`)

	const wiped = "devdax-4a3e6b7c-1d2f-4e5a-9b8c-7d6e5f4a3b2c"
	unknown, err := checkGenerations([]state.Generation{{Block: "ram1", Key: wiped, Generation: 7}})
	require.NoError(t, err)
	assert.Equal(t, []string{"ram1"}, unknown)
	require.NoError(t, m.spendGenerations([]state.Generation{{Block: "ram1", Key: wiped, Generation: 7}}))
	gen, _, err = state.CurrentGeneration(wiped)
	require.NoError(t, err)
	assert.Equal(t, uint64(8), gen)

	require.NoError(t, m.spendGenerations(nil))

	_, err = checkGenerations([]state.Generation{{Block: "ram0", Key: "../../etc/passwd", Generation: 0}})
	require.ErrorContains(t, err, "not valid", "a record name from a state file is never a path")
}
