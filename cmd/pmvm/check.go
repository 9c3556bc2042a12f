package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/vmm"
)

const checkUsage = `usage: pmvm check CONFIG.toml [--json]

Probes every memory block of the config without creating, mapping or
locking anything, classifies its backing (survives-kexec, survives-restart,
volatile) and says whether it can honour the VM's mode.

exit codes: 0 every block is accepted, 1 a block is refused, 2 bad usage or
invalid config.
`

// checkResult is the JSON form of pmvm check's report.
type checkResult struct {
	Config string             `json:"config"`
	VM     string             `json:"vm"`
	Mode   memspec.Mode       `json:"mode"`
	OK     bool               `json:"ok"`
	Blocks []pmem.BlockReport `json:"blocks"`
}

// cmdCheck is `pmvm check CONFIG.toml [--json]`.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pmvm check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, checkUsage) }
	asJSON := fs.Bool("json", false, "print the report as JSON")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "pmvm check: want exactly one CONFIG.toml, got %d arguments\n\n%s", len(pos), checkUsage)
		return exitUsage
	}
	cfg, err := configs.Load(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "pmvm check: invalid config:\n%v\n", err)
		return exitUsage
	}

	// Check's error repeats what the report says block by block.
	rep, _ := pmem.Check(vmm.MemorySpecs(cfg)...)
	res := checkResult{Config: pos[0], VM: cfg.Name, Mode: cfg.RunMode(), OK: rep.OK, Blocks: rep.Blocks}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(stderr, "pmvm check:", err)
			return exitFailure
		}
	} else {
		printCheck(stdout, res)
	}
	if !rep.OK {
		return exitFailure
	}
	return 0
}

// printCheck writes the report as a table, then each block's notes, then a
// summary line.
func printCheck(w io.Writer, res checkResult) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "BLOCK\tBACKING\tSIZE\tALIGN\tCLASS\tVERDICT")
	refused := 0
	for _, b := range res.Blocks {
		backing := b.Backing
		if b.Class != "" && b.Kind != pmem.KindAnonymous && b.Kind != pmem.KindMemfd {
			backing = string(b.Kind) + " " + b.Backing
		}
		align, class := "-", "-"
		if b.Align != 0 {
			align = memspec.FormatSize(b.Align)
		}
		if b.Class != "" {
			class = string(b.Class)
		}
		verdict := "ok"
		if !b.OK {
			verdict = "REFUSED: " + b.Reason
			refused++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", b.Block, backing, memspec.FormatSize(b.Size), align, class, verdict)
	}
	tw.Flush()
	var notes []string
	for _, b := range res.Blocks {
		for _, n := range b.Notes {
			notes = append(notes, fmt.Sprintf("  %s: %s", b.Block, n))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nnotes:\n%s\n", strings.Join(notes, "\n"))
	}
	fmt.Fprintln(w)
	if refused == 0 {
		fmt.Fprintf(w, "vm %q, mode %s: every memory block can honour the mode\n", res.VM, res.Mode)
	} else {
		fmt.Fprintf(w, "vm %q, mode %s: %d of %d memory blocks REFUSED; pmvm run would not start this VM\n", res.VM, res.Mode, refused, len(res.Blocks))
	}
}
