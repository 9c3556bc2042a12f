package labrun

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/pmvm/pmvm/pmem/flock"
)

// SummaryEnv names the file (JSON lines) that collects test records for
// make test's closing summary; unset, nothing is recorded.
const SummaryEnv = "PMVM_TEST_SUMMARY"

// Record kinds and places.
const (
	KindPackage = "package" // a package's tests ran (Where says where)
	KindRetry   = "retry"   // a lab test ran a second time after lab host trouble

	WhereHost = "host" // this machine, its own /dev/kvm where needed
	WhereLab  = "lab"  // inside a lab host under QEMU TCG
)

// Record is one line of the summary file.
type Record struct {
	Kind    string  `json:"kind"`
	Name    string  `json:"name"` // package directory, or test name for a retry
	Where   string  `json:"where,omitempty"`
	Code    int     `json:"code"` // exit status (0 passed); for a retry, the second attempt's
	Seconds float64 `json:"seconds,omitempty"`
	Note    string  `json:"note,omitempty"` // why there, or the first attempt's failure
}

// Append adds r to $PMVM_TEST_SUMMARY, if set. Test binaries of several
// packages append at once: one write per record under an flock.
func Append(r Record) {
	path := os.Getenv(SummaryEnv)
	if path == "" {
		return
	}
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "labrun: summary %s: %v\n", path, err)
		return
	}
	defer f.Close()
	_ = flock.Exclusive(f) // keeps concurrent packages' records from interleaving; best effort
	f.Write(append(b, '\n'))
}

// ReadSummary reads a summary file's records.
func ReadSummary(r io.Reader) ([]Record, error) {
	var out []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var rec Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return nil, fmt.Errorf("summary line %d: %w", n, err)
		}
		out = append(out, rec)
	}
	return out, sc.Err()
}

// WriteSummary prints the records as make test's closing summary:
// packages by where they ran with their results, then retried lab tests.
func WriteSummary(w io.Writer, recs []Record) {
	var pkgs, retries []Record
	for _, r := range recs {
		switch r.Kind {
		case KindPackage:
			pkgs = append(pkgs, r)
		case KindRetry:
			retries = append(retries, r)
		}
	}
	sort.SliceStable(pkgs, func(i, j int) bool {
		if pkgs[i].Where != pkgs[j].Where {
			return pkgs[i].Where < pkgs[j].Where
		}
		return pkgs[i].Name < pkgs[j].Name
	})
	fmt.Fprintln(w, "== where the tests that need a KVM host (or huge pages, cgroups) ran ==")
	if len(pkgs) == 0 {
		fmt.Fprintln(w, "  (no record: the results were cached, or nothing ran)")
	}
	for _, r := range pkgs {
		where := "this machine"
		if r.Where == WhereLab {
			where = "lab host"
		}
		fmt.Fprintf(w, "  %-14s %-12s %-5s %6.1fs  %s\n", r.Name, where, result(r.Code), r.Seconds, r.Note)
	}
	fmt.Fprintln(w, "== lab tests that needed a second attempt ==")
	if len(retries) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, r := range retries {
		fmt.Fprintf(w, "  %-40s second attempt %s; first failed: %s\n", r.Name, result(r.Code), r.Note)
	}
}

func result(code int) string {
	if code == 0 {
		return "ok"
	}
	return "FAIL"
}
