package lab

import (
	"embed"
	"fmt"
	"sort"
	"strings"
)

// The lab's shell lives in scripts/*.sh, each a script shellcheck checks
// (make test-shellcheck). An /init is built by putting parts one after
// the other: scripts/prelude.sh first, then libraries, then a shellVars
// block that sets the parameters, then the body. Scenarios run as
// "sh /lab/scenario.sh" in the lab host: a shellVars block and the
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

// shellVars sets a script's parameters: one NAME='value' line each, in
// name order, every value single-quoted so the shell takes it literally.
func shellVars(vars map[string]string) string {
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

// shellQuote quotes s for sh: '...' with each ' written as '\”.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
