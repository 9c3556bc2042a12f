package lab

import (
	"fmt"
	"strconv"
	"strings"
)

// GuestHealthProblems is the one judge of the guests' own health, applied
// to every lab test's console: a guest must report (scripts/guest-report.sh,
// health_report) after boot and after every resume, with its kernel
// untainted (/proc/sys/kernel/tainted 0) and no WARNING, BUG, Oops or RCU
// stall in its dmesg. It returns one problem per bad or missing report.
// The lab relays guest lines with prefixes ("[l2] ", "PMVM-LAB got: "), so
// markers are found anywhere in a line and a line seen twice counts once.
func GuestHealthProblems(lines []string) []string {
	var problems []string
	seen := map[string]bool{}
	reported := map[string]bool{}
	var booted, resumed []string
	details := map[string][]string{}
	var reports []string
	for _, l := range lines {
		i := strings.Index(l, "PMVM-GUEST ")
		if i < 0 {
			continue
		}
		marker := strings.TrimSpace(l[i+len("PMVM-GUEST "):])
		if seen[marker] {
			continue
		}
		seen[marker] = true
		switch {
		case strings.HasPrefix(marker, "uname="):
			booted = append(booted, marker)
		case strings.HasPrefix(marker, "resumed n="):
			resumed = append(resumed, Fields(marker)["n"])
		case strings.HasPrefix(marker, "health-problem when="):
			when, text, _ := strings.Cut(strings.TrimPrefix(marker, "health-problem when="), ": ")
			details[when] = append(details[when], text)
		case strings.HasPrefix(marker, "health "):
			reports = append(reports, marker)
		}
	}
	for _, r := range reports {
		f := Fields(r)
		when := f["when"]
		reported[when] = true
		if t := f["tainted"]; t != "0" {
			problems = append(problems, fmt.Sprintf("guest (%s): the kernel is tainted: /proc/sys/kernel/tainted = %s (%s)", when, t, taintFlags(t)))
		}
		if n := f["problems"]; n != "0" {
			problems = append(problems, fmt.Sprintf("guest (%s): %s WARNING/BUG/Oops/RCU stall lines in dmesg:\n\t%s", when, n, strings.Join(details[when], "\n\t")))
		}
	}
	if len(booted) > 0 && !reported["boot"] {
		problems = append(problems, "a guest booted (it printed its uname) but printed no health report after boot (PMVM-GUEST health when=boot ...)")
	}
	for _, n := range resumed {
		if !reported["resume-"+n] {
			problems = append(problems, fmt.Sprintf("a guest resumed (n=%s) but printed no health report after it (PMVM-GUEST health when=resume-%s ...)", n, n))
		}
	}
	return problems
}

// taintFlags spells /proc/sys/kernel/tainted as the kernel's letters
// (Documentation/admin-guide/tainted-kernels.rst): W is a WARNING.
func taintFlags(v string) string {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return "not a number"
	}
	const letters = "PFSRMBUDAWCIOELKXTN"
	var out []string
	for i := 0; i < 64; i++ {
		if n&(1<<i) == 0 {
			continue
		}
		if i < len(letters) {
			out = append(out, string(letters[i]))
		} else {
			out = append(out, "bit "+strconv.Itoa(i))
		}
	}
	return "flags " + strings.Join(out, ",")
}
