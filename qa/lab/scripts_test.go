package lab

import (
	"io/fs"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every embedded script says which shell it is written for, so
// shellcheck (make test-shellcheck) checks it as what busybox runs.
func TestScriptsDeclareTheirShell(t *testing.T) {
	names, err := fs.Glob(scriptFS, "scripts/*.sh")
	require.NoError(t, err)
	require.NotEmpty(t, names)
	for _, n := range names {
		require.Contains(t, script(strings.TrimPrefix(n, "scripts/")), "# shellcheck shell=sh\n", n)
	}
}

// shellVars' values reach the script literally, whatever they hold.
func TestShellVarsRoundTrip(t *testing.T) {
	l, err := New(t.Logf)
	require.NoError(t, err)
	bb, err := l.BusyboxBinary()
	require.NoError(t, err)
	vars := map[string]string{
		"PLAIN":   "vm1 vm2",
		"QUOTE":   `it's "quoted" $HOME $(echo no) ` + "`echo no`",
		"NEWLINE": "truncated /lab/guest.toml --incoming /tmp/t.state\nother /lab/o.toml\n",
		"EMPTY":   "",
	}
	src := shellVars(vars) + `printf '%s|' "$PLAIN" "$QUOTE" "$NEWLINE" "$EMPTY"`
	out, err := exec.Command(bb, "sh", "-c", src).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Equal(t, vars["PLAIN"]+"|"+vars["QUOTE"]+"|"+vars["NEWLINE"]+"||", string(out))
	require.True(t, strings.HasPrefix(shellVars(vars), "EMPTY=''\nNEWLINE="), "in name order")
}

// A script name that is not embedded is a bug: script panics at once.
func TestScriptMissingPanics(t *testing.T) {
	require.Panics(t, func() { script("no-such.sh") })
}
