// Command report turns the output of the save/resume benchmarks
// (go test -bench ./qa/bench) into side-by-side tables: pmvm beside QEMU at
// each RAM size, and how each number changes from the smallest RAM size
// to the largest. With several runs (-count) it shows the median.
//
//	go run ./qa/bench/report bin/bench.txt
//	go test -run '^$' -bench . ./qa/bench | go run ./qa/bench/report
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, out io.Writer) error {
	var r io.Reader = stdin
	if len(args) > 1 {
		return errors.New("usage: report [BENCH-OUTPUT-FILE]  (default: stdin)")
	}
	if len(args) == 1 && args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	res, err := Parse(r)
	if err != nil {
		return err
	}
	if len(res.byName) == 0 {
		return errors.New("no benchmark results in the input (did the benchmarks run? see the output above)")
	}
	Write(out, res)
	return nil
}

// Results holds parsed benchmark output.
type Results struct {
	// byName maps "Save/ram=256MiB" (the name without "Benchmark" and
	// the GOMAXPROCS suffix) to its samples: unit -> one value per run.
	byName map[string]map[string][]float64
	// where: "package: place" for each package qa/labrun said ran where.
	where map[string]bool
}

// whereRE matches qa/labrun's line saying where a package's tests ran.
var whereRE = regexp.MustCompile(`^labrun: (\S+): tests run (on this machine|inside a lab host)`)

// Where says where the benchmarks ran, one line per package.
func (r Results) Where() []string {
	var out []string
	for w := range r.where {
		out = append(out, w)
	}
	sort.Strings(out)
	return out
}

// InLab reports whether any benchmark ran inside a lab host.
func (r Results) InLab() bool {
	for _, w := range r.Where() {
		if strings.Contains(w, "lab host") {
			return true
		}
	}
	return false
}

var procSuffix = regexp.MustCompile(`-\d+$`)

// Parse reads `go test -bench` output; other lines are ignored.
func Parse(r io.Reader) (Results, error) {
	res := Results{byName: map[string]map[string][]float64{}, where: map[string]bool{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m := whereRE.FindStringSubmatch(sc.Text()); m != nil {
			where := "this machine's /dev/kvm"
			if m[2] != "on this machine" {
				where = "a lab host (nested KVM under QEMU TCG)"
			}
			res.where[m[1]+": "+where] = true
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue // not a result line (e.g. "BenchmarkX --- FAIL")
		}
		name := procSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), "")
		m := res.byName[name]
		if m == nil {
			m = map[string][]float64{}
			res.byName[name] = m
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return Results{}, fmt.Errorf("%s: value %q of %s: %w", f[0], f[i], f[i+1], err)
			}
			m[f[i+1]] = append(m[f[i+1]], v)
		}
	}
	return res, sc.Err()
}

// Get returns the median of bench's unit, and whether there was any.
func (r Results) Get(bench, unit string) (float64, bool) {
	v := r.byName[bench][unit]
	if len(v) == 0 {
		return 0, false
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2], true
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2, true
}

// runs is how many samples bench's unit has.
func (r Results) runs(bench, unit string) int { return len(r.byName[bench][unit]) }

// sizes lists the ram= values seen, smallest first.
func (r Results) sizes() []string {
	seen := map[string]bool{}
	for name := range r.byName {
		if _, sub, ok := strings.Cut(name, "/ram="); ok {
			seen[sub] = true
		}
	}
	var s []string
	for k := range seen {
		s = append(s, k)
	}
	sort.Slice(s, func(i, j int) bool { return sizeBytes(s[i]) < sizeBytes(s[j]) })
	return s
}

func sizeBytes(s string) float64 {
	for _, u := range []struct {
		suf  string
		mult float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n, ok := strings.CutSuffix(s, u.suf); ok {
			v, _ := strconv.ParseFloat(n, 64)
			return v * u.mult
		}
	}
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

// column is one number of a table: a benchmark (without "/ram=") and a unit.
type column struct {
	head  string
	bench string
	unit  string
	bytes bool // a size, printed as bytes
	// over, when set, makes this a ratio column: bench's unit over
	// over's unit (overUnit, default unit), measured in the same run.
	over, overUnit string
}

func (r Results) cell(c column, size string) string {
	v, ok := r.Get(c.bench+"/ram="+size, c.unit)
	if !ok {
		return "-"
	}
	if c.over != "" {
		u := c.overUnit
		if u == "" {
			u = c.unit
		}
		d, ok := r.Get(c.over+"/ram="+size, u)
		if !ok || d == 0 {
			return "-"
		}
		return strconv.FormatFloat(v/d, 'f', 2, 64) + "x"
	}
	if c.bytes {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return fmtMs(v)
}

func fmtMs(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// growth is largest/smallest for a column, the "does it grow with RAM" line.
func (r Results) growth(c column, sizes []string) string {
	if len(sizes) < 2 {
		return ""
	}
	if c.over != "" {
		return "-" // a ratio of ratios says nothing
	}
	lo, ok1 := r.Get(c.bench+"/ram="+sizes[0], c.unit)
	hi, ok2 := r.Get(c.bench+"/ram="+sizes[len(sizes)-1], c.unit)
	if !ok1 || !ok2 || lo == 0 {
		return "-"
	}
	return strconv.FormatFloat(hi/lo, 'f', 2, 64) + "x"
}

// variant is a family of benchmarks: the column's benchmark name plus
// suffix ("Touched"), shown as label in the memory column.
type variant struct{ suffix, label string }

var (
	sparse  = variant{"", "sparse"}
	touched = variant{"Touched", "touched"}
)

func (r Results) table(w io.Writer, title string, cols []column, variants []variant) {
	type row struct {
		size  string
		v     variant
		cells []string
	}
	var rows []row
	for _, v := range variants {
		var sizes []string
		for _, s := range r.sizes() {
			cells := make([]string, len(cols))
			filled := false
			for i, c := range cols {
				c.bench += v.suffix
				if c.over != "" {
					c.over += v.suffix
				}
				cells[i] = r.cell(c, s)
				filled = filled || cells[i] != "-"
			}
			if filled {
				rows = append(rows, row{s, v, cells})
				sizes = append(sizes, s)
			}
		}
		if len(sizes) > 1 {
			cells := make([]string, len(cols))
			for i, c := range cols {
				c.bench += v.suffix
				if c.over != "" {
					c.over += v.suffix
				}
				cells[i] = r.growth(c, sizes)
			}
			rows = append(rows, row{sizes[len(sizes)-1] + " / " + sizes[0], v, cells})
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "RAM\tmemory\t"
	for _, c := range cols {
		head += c.head + "\t"
	}
	fmt.Fprintln(tw, head)
	for _, rw := range rows {
		fmt.Fprintln(tw, rw.size+"\t"+rw.v.label+"\t"+strings.Join(rw.cells, "\t")+"\t")
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// Write prints the tables.
func Write(w io.Writer, r Results) {
	n := 0
	for name := range r.byName {
		n = max(n, r.runs(name, "p50-ms"))
	}
	fmt.Fprintf(w, "pmvm vs QEMU 7.2, side by side in the same run.\n"+
		"Milliseconds: each benchmark's median iteration (p50), median over %d run(s); means are in the raw output (ms/op).\n", n)
	where := r.Where()
	if len(where) == 0 {
		where = []string{"(not said: output of a version without qa/labrun)"}
	}
	fmt.Fprintf(w, "Where they ran: %s\n", strings.Join(where, "; "))
	if r.InLab() {
		fmt.Fprintln(w, "In a lab host every instruction of pmvm and QEMU runs under QEMU TCG: absolute times mean little; compare the pmvm/QEMU ratios.")
	}
	fmt.Fprintln(w)

	r.table(w, "WHOLE CYCLE AS THE GUEST SEES IT: a real Linux guest (qemu-ga, RAM on /dev/dax0.0); from the save/stop request until its agent answers again from a new process", []column{
		{head: "pmvm ms", bench: "Cycle", unit: "p50-ms"},
		{head: "QEMU ms", bench: "QEMUCycle", unit: "p50-ms"},
		{head: "pmvm/QEMU", bench: "Cycle", unit: "p50-ms", over: "QEMUCycle"},
		{head: "pmvm down ms", bench: "Cycle", unit: "down-p50-ms"},
		{head: "QEMU down ms", bench: "QEMUCycle", unit: "down-p50-ms"},
		{head: "pmvm up ms", bench: "Cycle", unit: "up-p50-ms"},
		{head: "QEMU up ms", bench: "QEMUCycle", unit: "up-p50-ms"},
	}, []variant{{"", "dax"}})

	r.table(w, "VMM-ONLY PART, SAVE (tiny guest, RAM in a /dev/shm file): guest already suspended (pmvm: ACPI S3; QEMU: paused, never ran) -> state file durable", []column{
		{head: "pmvm ms", bench: "Save", unit: "p50-ms"},
		{head: "QEMU ms", bench: "QEMUSave", unit: "p50-ms"},
		{head: "pmvm/QEMU", bench: "Save", unit: "p50-ms", over: "QEMUSave"},
		{head: "QEMU migrate ms", bench: "QEMUSave", unit: "migrate-p50-ms"},
		{head: "pmvm state bytes", bench: "Save", unit: "state-bytes", bytes: true},
		{head: "QEMU state bytes", bench: "QEMUSave", unit: "state-bytes", bytes: true},
	}, []variant{sparse, touched})

	r.table(w, "VMM-ONLY PART, RESUME (tiny guest): state file -> guest running again", []column{
		{head: "pmvm ms", bench: "Resume", unit: "p50-ms"},
		{head: "pmvm process ms", bench: "ResumeProcess", unit: "p50-ms"},
		{head: "QEMU process ms", bench: "QEMUResume", unit: "p50-ms"},
		{head: "pmvm/QEMU", bench: "ResumeProcess", unit: "p50-ms", over: "QEMUResume"},
		{head: "pmvm load ms", bench: "Resume", unit: "load-p50-ms"},
		{head: "QEMU load ms", bench: "QEMUResume", unit: "load-p50-ms"},
		{head: "pmvm new ms", bench: "Resume", unit: "new-p50-ms"},
		{head: "QEMU start ms", bench: "QEMUResume", unit: "start-p50-ms"},
	}, []variant{sparse, touched})

	r.table(w, "QEMU WITHOUT x-ignore-shared (RAM copied into the state file; every page touched)", []column{
		{head: "save ms", bench: "QEMUSaveCopyRAM", unit: "p50-ms"},
		{head: "resume ms", bench: "QEMUResumeCopyRAM", unit: "p50-ms"},
		{head: "load ms", bench: "QEMUResumeCopyRAM", unit: "load-p50-ms"},
		{head: "state bytes", bench: "QEMUSaveCopyRAM", unit: "state-bytes", bytes: true},
	}, []variant{{"", "touched"}})

	fmt.Fprint(w, `Columns:
  pmvm ms (cycle)         'pmvm save' (suspend through the guest agent, ACPI S3, state file, pmvm exits), a new
                          'pmvm run --incoming' (wake at the FACS vector, clock set), until guest-ping answers.
  QEMU ms (cycle)         stop, migrate (x-ignore-shared) to a durable state file, quit, a new QEMU with
                          -incoming, migrate-incoming, cont, until guest-ping answers: QEMU 7.2's nearest.
  down ms / up ms         the cycle's parts: until the old process has exited; from then until the agent answers.
  pmvm/QEMU               the pmvm number over QEMU's, both measured in the same run: <1.00x, pmvm is faster.
  VMM-only part           a tiny hand-made guest: no agent, no S3 entry, QEMU never runs its guest; what the
                          VMMs alone cost, not what a guest sees.
  pmvm ms (save)          Machine.SaveState of a guest in S3, until the state file is durable.
  QEMU ms (save)          getfd + migrate fd: of a QEMU paused with -S, until MIGRATION completed and the
                          stream is durable in the file (the same tmp/fsync/rename/dir-fsync write).
  QEMU migrate ms         the same, up to the MIGRATION completed event only (before the file is durable).
  pmvm ms (resume)        in process: vmm.CheckIncoming + vmm.New + Restore + Run/Wake until the guest's
                          first port write at its FACS waking vector. No exec, no config parsing.
  pmvm process ms         exec of 'pmvm run CONFIG --incoming STATE' until the guest's first byte on stdout.
  QEMU process ms         exec of QEMU (-S -incoming defer) until the RESUME event after migrate-incoming
                          completed and 'cont' (QEMU cannot show a first guest instruction).
  pmvm load ms            the in-process resume without vmm.New: CheckIncoming + Restore + Wake.
  QEMU load ms            QEMU's resume from getfd + migrate-incoming to RESUME (process and machine up).
  pmvm new ms             vmm.New in the resume: map the backing, create the VM, irqchip, vCPUs, devices.
  QEMU start ms           exec of QEMU until it answers QMP (machine built) with capabilities set.
  A / B rows              the value at the largest RAM size over the value at the smallest: ~1.00x means
                          the cost does not grow with RAM. "touched": every page of RAM was written first.
`)
}
