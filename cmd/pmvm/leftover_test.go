package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestIncomingNamesALeftoverTemporaryStateFile proves that when a save was
// killed after its temporary file was written in full but before the
// rename (the state file is missing, .NAME.tmp-* is beside it), pmvm run
// --incoming refuses without using it, says it is there, that it is
// complete and valid, and gives the exact mv that makes it the state file;
// after that mv the guest resumes. A temporary file cut short is named as
// unusable. Guest memory is untouched by each refusal.
func TestIncomingNamesALeftoverTemporaryStateFile(t *testing.T) {
	dir, cfg, backing, statePath := savedGuest(t)
	good, err := os.ReadFile(statePath)
	require.NoError(t, err)
	require.NoError(t, os.Remove(statePath))
	before := fileSum(t, backing)

	incoming := func() (int, string, string) {
		var out, errb bytes.Buffer
		code := runMain([]string{"run", cfg, "--incoming", statePath, "--log-level", "error"}, &out, &errb)
		return code, out.String(), errb.String()
	}

	// Cut short: a save killed while writing.
	partial := filepath.Join(dir, ".tiny.state.tmp-1111")
	require.NoError(t, os.WriteFile(partial, good[:len(good)/2], 0o600))
	code, out, errs := incoming()
	assert.Equal(t, exitFailure, code)
	assert.Empty(t, out, "the guest did not run")
	assert.Contains(t, errs, "a temporary state file "+partial+" is beside it")
	assert.Contains(t, errs, "it is not usable")
	assert.Contains(t, errs, "truncated")
	assert.Equal(t, before, fileSum(t, backing), "guest memory untouched")
	require.NoError(t, os.Remove(partial))

	// Complete: a save killed between the fsync and the rename.
	tmp := filepath.Join(dir, ".tiny.state.tmp-2222")
	require.NoError(t, os.WriteFile(tmp, good, 0o600))
	code, out, errs = incoming()
	assert.Equal(t, exitFailure, code)
	assert.Empty(t, out, "the guest did not run: a temporary file is never used silently")
	assert.Contains(t, errs, "a temporary state file "+tmp+" is beside it")
	assert.Contains(t, errs, `it is complete and valid (a state file of VM "tiny"`)
	assert.Contains(t, errs, "mv "+tmp+" "+statePath)
	assert.FileExists(t, tmp)
	assert.NoFileExists(t, statePath)
	assert.Equal(t, before, fileSum(t, backing), "guest memory untouched")

	// The way out the message gives works.
	require.NoError(t, os.Rename(tmp, statePath))
	code, out, errs = incoming()
	require.Equal(t, exitPowerOff, code, errs)
	assert.Equal(t, "WM\x80", out, "the guest resumed")
}
