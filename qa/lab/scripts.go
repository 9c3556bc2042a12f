package lab

import (
	"embed"
	"fmt"
	"sort"
	"strings"
)

// The lab's shell lives in scripts/*.sh, each a script shellcheck checks
// (make test-shellcheck). An /init is built by putting parts one after
// the other: scripts/prelude.sh first, then libraries, then a ShellVars
// block that sets the parameters, then the body. Scenarios run as
// "sh /lab/scenario.sh" in the lab host: a ShellVars block and the
// scenario file.

//go:embed scripts/*.sh
var scriptFS embed.FS

// script returns scripts/<name>. A missing file is a bug of this package
// (TestScriptsEmbedded reads every name used), so it panics.
func script(name string) string {
	b, err := scriptFS.ReadFile("scripts/" + name)
	if err != nil {
		panic(fmt.Sprintf("lab: no embedded script %s: %v", name, err))
	}
	return string(b)
}

// ShellVars sets a script's parameters: one NAME='value' line each, in
// name order, every value single-quoted so the shell takes it literally.
// Other packages' scripts (qa/labrun) get their parameters the same way.
func ShellVars(vars map[string]string) string {
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s=%s\n", n, shellQuote(vars[n]))
	}
	return b.String()
}

// ShellArgs sets a script's positional parameters ("$@") to args, each
// single-quoted: a list (a command's arguments) that one variable
// cannot carry without splitting.
func ShellArgs(args []string) string {
	var b strings.Builder
	b.WriteString("set --")
	for _, a := range args {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString("\n")
	return b.String()
}

// shellQuote quotes s for sh: in single quotes, each ' inside written as
// the shell sequence below (close the quotes, an escaped quote, open them
// again). It stands in a code block: gofmt turns two single quotes in
// comment text into a typographic double quote.
//
//	'\''
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
