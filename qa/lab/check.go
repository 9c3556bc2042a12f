package lab

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pmvm/pmvm/qa/guestbin/guestlib"
)

// Checkers for the transcripts of DaxScenario and SuspendScenario. Each
// follows the scenario's "PMVM-LAB ..." lines in order with VM.WaitFor
// (the lab host prints them from one shell, so their order is certain; the
// relayed "[l2] " guest lines may lag and are not relied on). A missing
// line is a hard error (returned, with the console tail); a line that is
// there but wrong is a Problem, so one run reports every wrong value.

// Fields parses the key=value words of a marker line ("a=1 b=x y" gives
// a:1 b:x; words without "=" are skipped).
func Fields(line string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(line) {
		if k, v, ok := strings.Cut(w, "="); ok {
			m[k] = v
		}
	}
	return m
}

// PrefixedLines returns the text after prefix of every console line that
// starts with it (the output of a run_cmd TAG: "PMVM-LAB TAG: ").
func (vm *VM) PrefixedLines(prefix string) []string {
	var out []string
	for _, l := range vm.Lines() {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			out = append(out, rest)
		}
	}
	return out
}

func atoi64(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// DaxResult is what CheckDaxRun saw.
type DaxResult struct {
	DaxSize, DaxAlign uint64
	CheckDax          []string // pmvm check output for the dax config
	CheckDaxExit      int
	CheckAnon         []string // pmvm check output for the anonymous mode = "reboot" config
	CheckAnonExit     int
	GPA               uint64
	GuestMarker       string // hex, as the guest printed it
	PmvmExit          int
	PeekHex           string // hex, as daxpeek read it from /dev/dax0.0
	Problems          []string
}

// CheckDaxRun follows a DaxScenario run whose guest ran LocateGuestInit(seed).
func CheckDaxRun(vm *VM, seed uint64, timeout time.Duration) (*DaxResult, error) {
	r := &DaxResult{}
	bad := func(f string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(f, a...)) }
	wait := func(re string, d time.Duration) ([]string, error) {
		return vm.WaitFor(regexp.MustCompile(re), d)
	}
	m, err := wait(`^PMVM-LAB dax-ready size=(\d+) align=(\d+)`, 2*time.Minute)
	if err != nil {
		return r, err
	}
	r.DaxSize, _ = strconv.ParseUint(m[1], 10, 64)
	r.DaxAlign, _ = strconv.ParseUint(m[2], 10, 64)
	if r.DaxSize < 128<<20 || r.DaxSize > 256<<20 || r.DaxSize%(2<<20) != 0 {
		bad("/dev/dax0.0 is %d bytes; want a multiple of 2 MiB between 128 MiB and the 256 MiB of memmap=256M!4G", r.DaxSize)
	}

	if m, err = wait(`^PMVM-LAB check-dax-exit=(\d+)`, time.Minute); err != nil {
		return r, err
	}
	r.CheckDaxExit = int(atoi64(m[1]))
	r.CheckDax = vm.PrefixedLines("PMVM-LAB check-dax: ")
	if r.CheckDaxExit != 0 {
		bad("pmvm check on the device-dax config exited %d, want 0; output:\n\t%s", r.CheckDaxExit, strings.Join(r.CheckDax, "\n\t"))
	}
	// BLOCK BACKING SIZE ALIGN CLASS VERDICT: ram0 on the device, class
	// survives-kexec, verdict ok.
	survivesRe := regexp.MustCompile(`^ram0\s+(?:devdax\s+)?/dev/dax\S+\s+\S+\s+\S+\s+survives-kexec\s+ok\b`)
	survives := false
	for _, l := range r.CheckDax {
		if survivesRe.MatchString(strings.TrimSpace(l)) {
			survives = true
		}
	}
	if !survives {
		bad("pmvm check on the device-dax config printed no line with block ram0 on /dev/dax*, class survives-kexec, verdict ok; output:\n\t%s", strings.Join(r.CheckDax, "\n\t"))
	}

	if m, err = wait(`^PMVM-LAB check-anon-exit=(\d+)`, time.Minute); err != nil {
		return r, err
	}
	r.CheckAnonExit = int(atoi64(m[1]))
	r.CheckAnon = vm.PrefixedLines("PMVM-LAB check-anon: ")
	if r.CheckAnonExit == 0 {
		bad("pmvm check accepted mode = \"reboot\" with anonymous RAM (exit 0); output:\n\t%s", strings.Join(r.CheckAnon, "\n\t"))
	}
	if !strings.Contains(strings.Join(r.CheckAnon, "\n"), "ram0") {
		bad("pmvm check refusing the anonymous mode = \"reboot\" config does not name block ram0; output:\n\t%s", strings.Join(r.CheckAnon, "\n\t"))
	}

	if m, err = wait(`^PMVM-LAB got: .*PMVM-GUEST pattern-gpa=(0x[0-9a-f]+) marker=([0-9a-f]+)`, timeout); err != nil {
		return r, err
	}
	r.GPA, _ = guestlib.ParseUint(m[1])
	r.GuestMarker = m[2]
	want := guestlib.Hex(guestlib.Marker(seed))
	if r.GuestMarker != want {
		bad("guest marker %s, want %s (guestlib.Marker(%#x))", r.GuestMarker, want, seed)
	}
	if r.GPA+guestlib.MarkerLen > r.DaxSize {
		bad("guest-physical address %#x is beyond the %d-byte device-dax block", r.GPA, r.DaxSize)
	}

	if m, err = wait(`^PMVM-LAB pmvm-exit=(\d+)`, 2*time.Minute); err != nil {
		return r, err
	}
	r.PmvmExit = int(atoi64(m[1]))
	if r.PmvmExit != 0 {
		bad("pmvm run exited %d after the guest powered off, want 0", r.PmvmExit)
	}
	if m, err = wait(`^PMVM-LAB daxpeek dev=\S+ offset=(0x[0-9a-f]+) len=32 hex=([0-9a-f]+)`, time.Minute); err != nil {
		return r, err
	}
	r.PeekHex = m[2]
	if r.PeekHex != want {
		bad("/dev/dax0.0 at offset %s holds %s after the guest powered off, want the guest's marker %s", m[1], r.PeekHex, want)
	}
	for n := 1; n <= DaxColdBoots; n++ {
		if m, err = wait(fmt.Sprintf(`^PMVM-LAB coldboot-again n=%d exit=(\d+)`, n), 5*time.Minute); err != nil {
			return r, err
		}
		if m[1] != "0" {
			bad("cold boot %d over the memory the previous guest left on /dev/dax0.0: pmvm run exited %s after the guest's last line, want 0 (a power-off)", n, m[1])
		}
	}
	return r, nil
}

// ResumeCycle is one suspend/resume as CheckSuspendRun saw it.
type ResumeCycle struct {
	N           int
	RTC         bool     // woke by the guest's RTC alarm, no pmvm wakeup
	SuspendSecs int      // how long pmvm suspend took
	Status      []string // pmvm status output right after pmvm suspend
	Resumed     map[string]string
	GuestDate   int64 // the guest's date +%s when it noticed the resume
	L1Date      int64 // the lab host's date +%s when it saw that line
	Alarm       int64 // RTC cycle: the alarm time the guest armed
	Verify      string
}

// NoAgentResult is the suspend attempted without qemu-ga in the guest.
type NoAgentResult struct {
	Exit, Secs int
	Output     []string
	Status     []string
}

// SuspendResult is what CheckSuspendRun saw.
type SuspendResult struct {
	BootID   string
	MemSleep string
	// ReadySkew is guest date - lab host date when the guest got ready,
	// before any suspend: the clock offset that is not the resume's doing.
	ReadySkew int64
	Cycles    []ResumeCycle
	NoAgent   *NoAgentResult
	PmvmExit  int
	Problems  []string
}

// SuspendExpect is what CheckSuspendRun holds the guest to.
type SuspendExpect struct {
	CPUsOnline string // cpus-online after each resume (e.g. "0-1")
	MaxSkew    int64  // max |guest date - lab host date| in seconds (default 2)
	// NoAgentTimeout bounds the failing suspend (its --timeout), in seconds.
	NoAgentTimeout int
}

// CheckSuspendRun follows a SuspendScenario(p) run of a PMGuestInit guest.
func CheckSuspendRun(vm *VM, p SuspendPlan, want SuspendExpect, timeout time.Duration) (*SuspendResult, error) {
	if p.Cycles == 0 {
		p.Cycles = 3
	}
	if want.MaxSkew == 0 {
		want.MaxSkew = 2
	}
	r := &SuspendResult{}
	bad := func(f string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(f, a...)) }
	wait := func(re string, d time.Duration) ([]string, error) {
		return vm.WaitFor(regexp.MustCompile(re), d)
	}
	m, err := wait(`^PMVM-LAB got: .*PMVM-GUEST ready date=(\d+)`, timeout)
	if err != nil {
		return r, err
	}
	guestReady := atoi64(m[1])
	if m, err = wait(`^PMVM-LAB ready-seen l1-date=(\d+)`, time.Minute); err != nil {
		return r, err
	}
	r.ReadySkew = guestReady - atoi64(m[1])
	if m, err = wait(`^PMVM-LAB got: .*PMVM-GUEST boot_id=(\S+)`, time.Minute); err != nil {
		return r, err
	}
	r.BootID = m[1]
	if m, err = wait(`^PMVM-LAB got: .*PMVM-GUEST mem-sleep=(.*)`, time.Minute); err != nil {
		return r, err
	}
	r.MemSleep = strings.TrimSpace(m[1])
	if !strings.Contains(r.MemSleep, "[deep]") {
		bad("guest /sys/power/mem_sleep is %q: \"mem\" would not be ACPI S3; want [deep] selected (the guest needs _S3 in the DSDT and a FACS)", r.MemSleep)
	}

	total := p.Cycles
	if p.RTC {
		total++
	}
	for n := 1; n <= total; n++ {
		c := ResumeCycle{N: n, RTC: p.RTC && n == total}
		if c.RTC {
			if m, err = wait(fmt.Sprintf(`^PMVM-LAB got: .*PMVM-GUEST rtc-armed n=%d .*alarm=(\d+)`, n), 2*time.Minute); err != nil {
				return r, err
			}
			c.Alarm = atoi64(m[1])
		}
		if m, err = wait(fmt.Sprintf(`^PMVM-LAB suspend-%d-exit=(\d+) secs=(\d+)`, n), 3*time.Minute); err != nil {
			return r, err
		}
		c.SuspendSecs = int(atoi64(m[2]))
		if _, err = wait(fmt.Sprintf(`^PMVM-LAB status-%d-exit=`, n), time.Minute); err != nil {
			return r, err
		}
		c.Status = vm.PrefixedLines(fmt.Sprintf("PMVM-LAB status-%d: ", n))
		if !c.RTC && !strings.Contains(runstate(c.Status), "suspended") {
			bad("cycle %d: pmvm status right after pmvm suspend: %q, want it to say suspended", n, c.Status)
		}
		if !c.RTC {
			if _, err = wait(fmt.Sprintf(`^PMVM-LAB wakeup-%d-exit=0`, n), time.Minute); err != nil {
				return r, err
			}
		}
		if m, err = wait(fmt.Sprintf(`^PMVM-LAB got: .*PMVM-GUEST resumed n=%d (.*)`, n), 3*time.Minute); err != nil {
			return r, err
		}
		c.Resumed = Fields(m[1])
		c.GuestDate = atoi64(c.Resumed["date"])
		if m, err = wait(fmt.Sprintf(`^PMVM-LAB resumed-seen n=%d l1-date=(\d+)`, n), time.Minute); err != nil {
			return r, err
		}
		c.L1Date = atoi64(m[1])
		if m, err = wait(fmt.Sprintf(`^PMVM-LAB got: .*PMVM-GUEST pattern-verify (\S+) .*round=%d `, n), 10*time.Minute); err != nil {
			return r, err
		}
		c.Verify = m[1]
		r.Cycles = append(r.Cycles, c)

		if c.Verify != "ok" {
			bad("cycle %d: guest memory pattern check: %s", n, m[0])
		}
		if got := c.Resumed["boot_id"]; got != r.BootID {
			bad("cycle %d: boot_id %q after resume, want %q (the guest rebooted instead of resuming)", n, got, r.BootID)
		}
		if want.CPUsOnline != "" && c.Resumed["cpus-online"] != want.CPUsOnline {
			bad("cycle %d: cpus-online=%q after resume, want %q", n, c.Resumed["cpus-online"], want.CPUsOnline)
		}
		if got := c.Resumed["pm-exit"]; got != strconv.Itoa(n) {
			bad("cycle %d: %s \"PM: suspend exit\" lines in the guest's dmesg, want %d", n, got, n)
		}
		if skew := c.GuestDate - c.L1Date; skew > want.MaxSkew || skew < -want.MaxSkew {
			bad("cycle %d: guest wall clock %d vs lab host %d after resume: off by %d s (max %d)", n, c.GuestDate, c.L1Date, skew, want.MaxSkew)
		}
		if c.RTC && c.GuestDate < c.Alarm-1 {
			bad("cycle %d: the guest resumed at %d, before its RTC alarm at %d: something else woke it", n, c.GuestDate, c.Alarm)
		}
	}

	if p.NoAgent {
		if _, err = wait(`^PMVM-LAB got: .*PMVM-GUEST qga-stopped`, 2*time.Minute); err != nil {
			return r, err
		}
		if m, err = wait(`^PMVM-LAB noagent-exit=(\d+) secs=(\d+)`, 3*time.Minute); err != nil {
			return r, err
		}
		na := &NoAgentResult{Exit: int(atoi64(m[1])), Secs: int(atoi64(m[2])), Output: vm.PrefixedLines("PMVM-LAB noagent: ")}
		r.NoAgent = na
		if _, err = wait(`^PMVM-LAB noagent-status-exit=`, time.Minute); err != nil {
			return r, err
		}
		na.Status = vm.PrefixedLines("PMVM-LAB noagent-status: ")
		if want.NoAgentTimeout > 0 && na.Secs > want.NoAgentTimeout+5 {
			bad("pmvm suspend without an agent took %d s; its --timeout was %d s", na.Secs, want.NoAgentTimeout)
		}
		if len(strings.TrimSpace(strings.Join(na.Output, ""))) == 0 {
			bad("pmvm suspend without an agent failed (exit %d) without a message", na.Exit)
		}
		if st := runstate(na.Status); !strings.Contains(st, "running") || strings.Contains(st, "suspended") {
			bad("pmvm status after the failed suspend: %q, want running", na.Status)
		}
		if _, err = wait(`^PMVM-LAB got: .*PMVM-GUEST alive n=`, time.Minute); err != nil {
			return r, err
		}
	}
	if m, err = wait(`^PMVM-LAB pmvm-exit=(\d+)`, time.Minute); err != nil {
		return r, err
	}
	r.PmvmExit = int(atoi64(m[1]))
	if r.PmvmExit != 4 {
		bad("pmvm run exited %d after SIGTERM, want 4 (stopped by the host)", r.PmvmExit)
	}
	return r, nil
}

// runstate picks the run state out of pmvm status output: its
// "runstate:" line when there is one (the "last:" line may name other
// states), else the whole output.
func runstate(status []string) string {
	for _, l := range status {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "runstate:"); ok {
			return strings.TrimSpace(rest)
		}
	}
	return strings.Join(status, "\n")
}
