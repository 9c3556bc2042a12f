package vmm

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConsoleLogIsCapped proves a guest console written to a file cannot
// grow without bound: at max bytes the file is moved to <path>.1 (replacing
// the one before) and a new one started, so the newest output is always
// kept and the console takes at most twice max; each rotation is logged
// once, and nothing the guest wrote since the last rotation is lost.
func TestConsoleLogIsCapped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vm.console.log")
	require.NoError(t, os.WriteFile(path, bytes.Repeat([]byte("o"), 900), 0o640)) // an earlier run's output
	logs := &syncBuffer{}
	const max = 1000
	w, err := OpenConsoleLog(path, max, zerolog.New(logs))
	require.NoError(t, err)
	var all []byte
	for i := range 100 {
		line := []byte(strings.Repeat(string(rune('a'+i%26)), 99) + "\n")
		all = append(all, line...)
		n, err := w.Write(line)
		require.NoError(t, err)
		require.Equal(t, len(line), n)
	}
	require.NoError(t, w.Close())

	cur, err := os.ReadFile(path)
	require.NoError(t, err)
	prev, err := os.ReadFile(path + ".1")
	require.NoError(t, err, "the full file was rotated to .1")
	assert.LessOrEqual(t, len(cur), max)
	assert.LessOrEqual(t, len(prev), max)
	assert.True(t, bytes.HasSuffix(all, append(prev, cur...)), "the newest output is kept, in order")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "one rotated file is kept, no more")
	assert.Equal(t, 10, strings.Count(logs.String(), "console log reached its maximum"), "each rotation is logged once")
}
