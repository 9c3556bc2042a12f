package labrun

import (
	"embed"
	"fmt"
)

// labrun's shell lives in scripts/*.sh, checked by shellcheck (make
// test-shellcheck) and put together as qa/lab's are: the lab's parts
// first, then the parameters (lab.ShellVars, lab.ShellArgs), then the
// script.

//go:embed scripts/*.sh
var scriptFS embed.FS

// script returns scripts/<name>. A missing file is a bug of this package
// (TestScriptsEmbedded reads every name used), so it panics.
func script(name string) string {
	b, err := scriptFS.ReadFile("scripts/" + name)
	if err != nil {
		panic(fmt.Sprintf("labrun: no embedded script %s: %v", name, err))
	}
	return string(b)
}
