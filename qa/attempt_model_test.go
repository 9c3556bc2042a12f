package qa

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAttemptRecordsFailuresWithoutFailingTheTest proves that an attempt
// keeps testify's and testing's failures to itself (so it can be judged
// and retried) and that Fatal ends the attempt there.
func TestAttemptRecordsFailuresWithoutFailingTheTest(t *testing.T) {
	a := &attemptT{T: t, n: 1}
	reached := false
	a.run(func(tb testing.TB) {
		tb.Errorf("first %d", 1)
		assert.Equal(tb, 1, 2)
		require.True(tb, false, "fatal here")
		reached = true
	})
	assert.False(t, reached, "require must end the attempt")
	assert.True(t, a.failed)
	require.Len(t, a.errs, 3)
	assert.Equal(t, "first 1", a.errs[0])
	assert.Contains(t, a.errs[2], "fatal here")
	assert.False(t, t.Failed(), "the test itself is untouched")

	ok := &attemptT{T: t, n: 1}
	ok.run(func(tb testing.TB) { tb.Log("fine") })
	assert.False(t, ok.failed)
}
