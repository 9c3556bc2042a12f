package lab

import (
	"fmt"
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

// ShellVars' values reach the script literally, whatever they hold.
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
	src := ShellVars(vars) + `printf '%s|' "$PLAIN" "$QUOTE" "$NEWLINE" "$EMPTY"`
	out, err := exec.Command(bb, "sh", "-c", src).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Equal(t, vars["PLAIN"]+"|"+vars["QUOTE"]+"|"+vars["NEWLINE"]+"||", string(out))
	require.True(t, strings.HasPrefix(ShellVars(vars), "EMPTY=''\nNEWLINE="), "in name order")
}

// ShellArgs' arguments reach "$@" one by one and literally, none split
// or lost, and none at all is an empty list.
func TestShellArgsRoundTrip(t *testing.T) {
	l, err := New(t.Logf)
	require.NoError(t, err)
	bb, err := l.BusyboxBinary()
	require.NoError(t, err)
	args := []string{"-test.run=^Test(A|B)$", "two words", "it's", "", "$HOME `echo no`", "line\nbreak"}
	for _, list := range [][]string{args, nil} {
		src := ShellArgs(list) + `echo "$#"; for a in "$@"; do printf '%s|' "$a"; done`
		out, err := exec.Command(bb, "sh", "-c", src).CombinedOutput()
		require.NoError(t, err, string(out))
		want := fmt.Sprintf("%d\n", len(list))
		for _, a := range list {
			want += a + "|"
		}
		require.Equal(t, want, string(out))
	}
}

// A script name that is not embedded is a bug: script panics at once.
func TestScriptMissingPanics(t *testing.T) {
	require.Panics(t, func() { script("no-such.sh") })
}
