package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/pmvm/pmvm/state"
)

const stateUsage = `usage:
  pmvm state inspect FILE [--json]   show a state file's header and every section

exit codes:
  0  the file is a valid state file
  1  the file is refused (not a state file, newer format, corrupt, truncated, too large)
  2  bad usage
`

// cmdState is "pmvm state SUBCOMMAND".
func cmdState(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, stateUsage)
		return exitUsage
	}
	switch args[0] {
	case "inspect":
		return cmdStateInspect(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, stateUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "pmvm state: unknown subcommand %q\n\n%s", args[0], stateUsage)
		return exitUsage
	}
}

// stateInspectJSON is the --json output: the file's path and size, then
// the state package's summary.
type stateInspectJSON struct {
	File string `json:"file"`
	Size int64  `json:"size"`
	state.Summary
}

// cmdStateInspect decodes FILE with every check a resume applies (magic,
// version, checksums, size cap) and describes it.
func cmdStateInspect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pmvm state inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "pmvm state inspect: want exactly one state FILE, got %d arguments\n", len(pos))
		return exitUsage
	}
	path := pos[0]
	f, err := state.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "pmvm state inspect:", err)
		return exitFailure
	}
	var size int64
	if st, err := os.Stat(path); err == nil {
		size = st.Size()
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(stateInspectJSON{File: path, Size: size, Summary: f.Summary()}); err != nil {
			fmt.Fprintln(stderr, "pmvm state inspect:", err)
			return exitFailure
		}
		return 0
	}
	fmt.Fprintf(stdout, "file:         %s (%d bytes)\n", path, size)
	f.Describe(stdout)
	return 0
}
