package lab

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// UpdateExpect is what CheckUpdateRun holds an update lab run to.
type UpdateExpect struct {
	From, To string // uname -r before and after the kexec
	VCPUs    int    // vCPUs of each carried VM (cpus-online after the resume; default 1)
	MaxSkew  int64  // max |guest date - lab host date| after the resume, seconds (default 2)
}

// UpdateVM is one carried VM as CheckUpdateRun saw it.
type UpdateVM struct {
	Name         string
	BootID       string // before the update
	ReadyDate    int64  // the guest's date when it was ready (pattern filled)
	ReadySeen    int64  // the lab host's date when it saw that
	RefuseStatus []string
	BootIDAfter  string            // when the guest reported its resume
	Resumed      map[string]string // the guest's "resumed n=1" fields
	GuestDate    int64             // the guest's date when it noticed the resume
	L1Date       int64             // the lab host's date when it saw that line
	Skew         int64             // GuestDate - L1Date
	Verify       string            // "ok" or "BAD"
	Blackout     time.Duration     // from the restore timeline: save requested -> running
	BlackoutText string
	PID          int
	CgroupBefore string // the cgroup v2 path of its pmvm before the update
	Cgroup       string // the cgroup v2 path of its restored pmvm
	StatusAfter  []string
}

// UpdateDax is a device-dax namespace before and after the kexec.
type UpdateDax struct {
	Name                  string
	SizeBefore, SizeAfter uint64
	UUIDBefore, UUIDAfter string
	SeenBefore, SeenAfter bool
}

// UpdateRun is what CheckUpdateRun saw.
type UpdateRun struct {
	UnameBefore, UnameAfter string
	// L1SkewBefore/After: the lab host's clock minus this machine's when
	// the lab host printed its facts, in seconds (the new kernel reads
	// the RTC, which has 1 s resolution).
	L1SkewBefore, L1SkewAfter float64
	StateFS                   string // filesystem of state_dir (ext2 on /dev/pmem2)
	Cgroup2                   string // controllers available
	Dax                       []*UpdateDax
	VMs                       []*UpdateVM

	RefuseExit     int
	RefuseOutput   []string
	RefuseState    int    // state files in state_dir after the refusal
	RefuseLoaded   string // /sys/kernel/kexec_loaded after it
	VolatileExit   int    // pmvm exit code of the unsaveable VM once stopped
	UpdateOutput   []string
	RestoreExit    int
	RestoreOutput  []string
	StateDirAfter  []string
	Hooks          []string
	VolatileOutput []string

	// Times since CheckUpdateRun started.
	At map[string]time.Duration
	// Order of the At keys, as they happened.
	Steps []string

	// Problems are wrong values; RefusalProblems those of the refused
	// update (the first part of the run).
	Problems, RefusalProblems []string
}

// VM returns the carried VM name, or nil.
func (r *UpdateRun) VM(name string) *UpdateVM {
	for _, v := range r.VMs {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// UpdateTimeline returns the update timeline as pmvm host restore printed
// it after the kexec (steps and blackouts), or nil.
func (r *UpdateRun) UpdateTimeline() []string {
	for i, l := range r.RestoreOutput {
		if strings.HasPrefix(l, "host update timeline ") {
			var out []string
			for _, m := range r.RestoreOutput[i:] {
				if strings.HasPrefix(m, "timeline: ") {
					break
				}
				out = append(out, m)
			}
			return out
		}
	}
	return nil
}

// PreKexecTimeline returns the timeline pmvm host update printed just
// before the kexec (read back from the state filesystem), or nil.
func (r *UpdateRun) PreKexecTimeline() []string {
	for i, l := range r.UpdateOutput {
		if strings.HasPrefix(l, "host update timeline ") {
			return r.UpdateOutput[i:]
		}
	}
	return nil
}

var (
	dateRe   = regexp.MustCompile(`\bdate=(\d+)`)
	bootIDRe = regexp.MustCompile(`\bboot_id=([0-9a-f-]+)`)
	// a blackout line of the timeline: "  vm1  16.79s"
	blackoutRe = regexp.MustCompile(`^\s+(\S+)\s+(\S+)$`)
)

// CheckUpdateRun follows an UpdateScenario run (UpdateHost) from the lab
// host's first line to "scenario-exit" on the new kernel. A missing line
// is an error (with the console tail); a line that is there but wrong is
// a Problem.
func CheckUpdateRun(vm *VM, want UpdateExpect, timeout time.Duration) (*UpdateRun, error) {
	if want.MaxSkew == 0 {
		want.MaxSkew = 2
	}
	if want.VCPUs == 0 {
		want.VCPUs = 1
	}
	t0 := time.Now()
	r := &UpdateRun{At: map[string]time.Duration{}}
	problems := &r.Problems
	bad := func(f string, a ...any) { *problems = append(*problems, fmt.Sprintf(f, a...)) }
	mark := func(step string) {
		r.At[step] = time.Since(t0)
		r.Steps = append(r.Steps, step)
	}
	deadline := t0.Add(timeout)
	wait := func(re string, d time.Duration) ([]string, error) {
		if left := time.Until(deadline); d > left {
			d = left
		}
		return vm.WaitFor(regexp.MustCompile(re), d)
	}
	names := make([]string, len(UpdateVMs))
	for i, v := range UpdateVMs {
		names[i] = v.Name
		r.VMs = append(r.VMs, &UpdateVM{Name: v.Name})
		r.Dax = append(r.Dax, &UpdateDax{Name: v.Dax})
	}
	// anyOrder waits for "PMVM-LAB <tag> vm=<name> <rest>" of every name.
	anyOrder := func(tag string, names []string, d time.Duration, each func(v string, rest string)) error {
		seen := map[string]bool{}
		for _, n := range names {
			seen[n] = false
		}
		for left := len(names); left > 0; {
			m, err := wait(`^PMVM-LAB `+regexp.QuoteMeta(tag)+` vm=(\S+) (.*)`, d)
			if err != nil {
				return err
			}
			if strings.HasPrefix(m[2], "FAILED") {
				return fmt.Errorf("%s", m[0])
			}
			if done, ours := seen[m[1]]; ours && !done {
				seen[m[1]] = true
				left--
				each(m[1], m[2])
			}
		}
		return nil
	}
	daxLines := func(after bool) error {
		for range r.Dax {
			m, err := wait(`^PMVM-LAB dax name=(\S+) size=(\d+) uuid=(\S*)`, time.Minute)
			if err != nil {
				return err
			}
			for _, d := range r.Dax {
				if d.Name != m[1] {
					continue
				}
				size, _ := strconv.ParseUint(m[2], 10, 64)
				if after {
					d.SizeAfter, d.UUIDAfter, d.SeenAfter = size, m[3], true
				} else {
					d.SizeBefore, d.UUIDBefore, d.SeenBefore = size, m[3], true
				}
			}
		}
		return nil
	}
	l1Facts := func(phase string) (string, float64, error) {
		m, err := wait(`^PMVM-LAB l1 phase=`+phase+` uname=(\S+) date=([0-9.]+)`, 2*time.Minute)
		if err != nil {
			return "", 0, err
		}
		now := time.Now()
		l1, _ := strconv.ParseFloat(m[2], 64)
		return m[1], l1 - float64(now.UnixNano())/1e9, nil
	}

	// --- the old kernel ---
	var err error
	if r.UnameBefore, r.L1SkewBefore, err = l1Facts("boot"); err != nil {
		return r, err
	}
	mark("lab host up (" + r.UnameBefore + ")")
	if want.From != "" && r.UnameBefore != want.From {
		bad("the lab host booted %s, want %s", r.UnameBefore, want.From)
	}
	if err := daxLines(false); err != nil {
		return r, err
	}
	m, err := wait(`^PMVM-LAB state-fs dev=(\S+) type=(\S+)`, time.Minute)
	if err != nil {
		return r, err
	}
	r.StateFS = m[2]
	if r.StateFS == "tmpfs" || r.StateFS == "ramfs" {
		bad("state_dir is on %s, which does not survive a kexec", r.StateFS)
	}
	if m, err = wait(`^PMVM-LAB cgroup2 controllers=(\S*)`, time.Minute); err != nil {
		return r, err
	}
	r.Cgroup2 = m[1]
	err = anyOrder("vm-ready", names, 8*time.Minute, func(name, rest string) {
		v := r.VM(name)
		if b := bootIDRe.FindStringSubmatch(rest); b != nil {
			v.BootID = b[1]
		}
		f := Fields(rest)
		v.ReadySeen = atoi64(f["l1-date"])
		if d := dateRe.FindStringSubmatch(rest); d != nil {
			v.ReadyDate = atoi64(d[1])
		}
		if v.BootID == "" {
			bad("VM %s: no boot_id in %q", name, rest)
		}
	})
	if err != nil {
		return r, err
	}
	mark("both guests ready (qemu-ga up, pattern filled)")
	for range r.VMs {
		m, err := wait(`^PMVM-LAB cgroup-before vm=(\S+) pid=\S* cgroup=(\S*)`, time.Minute)
		if err != nil {
			return r, err
		}
		if v := r.VM(m[1]); v != nil {
			v.CgroupBefore = m[2]
		}
	}

	// --- the refusal ---
	problems = &r.RefusalProblems
	if err = anyOrder("vm-ready", []string{VolatileVM}, 5*time.Minute, func(string, string) {}); err != nil {
		return r, err
	}
	mark("VM " + VolatileVM + " (mode none, anonymous RAM) running")
	if m, err = wait(`^PMVM-LAB refuse-exit=(\d+)`, 2*time.Minute); err != nil {
		return r, err
	}
	r.RefuseExit = int(atoi64(m[1]))
	r.RefuseOutput = vm.PrefixedLines("PMVM-LAB refuse: ")
	mark("pmvm host update refused")
	out := strings.Join(r.RefuseOutput, "\n")
	if r.RefuseExit != 1 {
		bad("pmvm host update with VM %s running exited %d, want 1 (refused); output:\n\t%s", VolatileVM, r.RefuseExit, strings.Join(r.RefuseOutput, "\n\t"))
	}
	if !strings.Contains(out, `VM "`+VolatileVM+`"`) || !strings.Contains(out, "cannot be preserved") {
		bad("the refusal does not name VM %q as one that cannot be preserved; output:\n\t%s", VolatileVM, strings.Join(r.RefuseOutput, "\n\t"))
	}
	if !strings.Contains(out, "refused before anything was suspended") {
		bad("the refusal does not say nothing was suspended; output:\n\t%s", strings.Join(r.RefuseOutput, "\n\t"))
	}
	for _, v := range r.VMs {
		if _, err = wait(`^PMVM-LAB refuse-status-`+v.Name+`-exit=`, time.Minute); err != nil {
			return r, err
		}
		v.RefuseStatus = vm.PrefixedLines("PMVM-LAB refuse-status-" + v.Name + ": ")
		if st := runstate(v.RefuseStatus); !strings.HasPrefix(st, "running") {
			bad("VM %s after the refused update: pmvm status says %q, want running", v.Name, st)
		}
	}
	if m, err = wait(`^PMVM-LAB after-refusal state-files=(\d+) kexec-loaded=(\S+)`, time.Minute); err != nil {
		return r, err
	}
	r.RefuseState, r.RefuseLoaded = int(atoi64(m[1])), m[2]
	if r.RefuseState != 0 {
		bad("the refused update left %d state files in state_dir", r.RefuseState)
	}
	if r.RefuseLoaded != "0" {
		bad("the refused update left a kernel loaded (/sys/kernel/kexec_loaded = %s)", r.RefuseLoaded)
	}
	if m, err = wait(`^PMVM-LAB stopped vm=`+VolatileVM+` exit=(\d+)`, time.Minute); err != nil {
		return r, err
	}
	r.VolatileExit = int(atoi64(m[1]))
	if r.VolatileExit != 4 {
		bad("pmvm of VM %s exited %d after SIGTERM, want 4", VolatileVM, r.VolatileExit)
	}

	// --- the update and the kexec ---
	problems = &r.Problems
	if _, err = wait(`^PMVM-LAB update-start `, time.Minute); err != nil {
		return r, err
	}
	mark("pmvm host update started")
	if m, err = wait(`^PMVM-LAB init (\S+) phase=restore`, 4*time.Minute); err != nil {
		return r, fmt.Errorf("the lab host did not come up on the new kernel: %w", err)
	}
	mark("new kernel's init (" + m[1] + ")")
	if r.UnameAfter, r.L1SkewAfter, err = l1Facts("restore"); err != nil {
		return r, err
	}
	if want.To != "" && r.UnameAfter != want.To {
		bad("after the update the lab host runs %s, want %s", r.UnameAfter, want.To)
	}
	if r.UnameAfter == r.UnameBefore {
		bad("uname -r is %s before and after the update: no new kernel", r.UnameAfter)
	}
	if err := daxLines(true); err != nil {
		return r, err
	}
	for _, d := range r.Dax {
		if !d.SeenBefore || !d.SeenAfter {
			bad("/dev/%s: seen before the kexec %v, after it %v", d.Name, d.SeenBefore, d.SeenAfter)
			continue
		}
		if d.UUIDBefore == "" || d.UUIDAfter != d.UUIDBefore {
			bad("/dev/%s: namespace uuid %q before the kexec, %q after", d.Name, d.UUIDBefore, d.UUIDAfter)
		}
		if d.SizeAfter != d.SizeBefore {
			bad("/dev/%s: %d bytes before the kexec, %d after", d.Name, d.SizeBefore, d.SizeAfter)
		}
	}
	if m, err = wait(`^PMVM-LAB restore-exit=(\d+)`, 3*time.Minute); err != nil {
		return r, err
	}
	r.RestoreExit = int(atoi64(m[1]))
	r.RestoreOutput = vm.PrefixedLines("PMVM-LAB restore: ")
	mark("pmvm host restore done")
	if r.RestoreExit != 0 {
		bad("pmvm host restore exited %d; output:\n\t%s", r.RestoreExit, strings.Join(r.RestoreOutput, "\n\t"))
	}
	if _, err = wait(`^PMVM-LAB update-output-end `, time.Minute); err != nil {
		return r, err
	}
	r.UpdateOutput = vm.PrefixedLines("PMVM-LAB update: ")
	uo := strings.Join(r.UpdateOutput, "\n")
	for _, want := range []string{"host update timeline", "kexec into " + LabNextKernel} {
		if !strings.Contains(uo, want) {
			bad("pmvm host update's output (read back after the kexec) has no %q; output:\n\t%s", want, strings.Join(r.UpdateOutput, "\n\t"))
		}
	}
	for _, v := range r.VMs {
		if !regexp.MustCompile(`(?m)^\s+` + v.Name + `\s+saved in \S+ -> `).MatchString(uo) {
			bad("pmvm host update's output does not say VM %s was saved", v.Name)
		}
	}
	inBlackout := false
	for _, l := range r.RestoreOutput {
		if strings.HasPrefix(l, "blackout ") {
			inBlackout = true
			continue
		}
		if !inBlackout {
			continue
		}
		b := blackoutRe.FindStringSubmatch(l)
		if b == nil {
			inBlackout = false
			continue
		}
		if v := r.VM(b[1]); v != nil {
			v.BlackoutText = b[2]
			v.Blackout, _ = time.ParseDuration(b[2])
		}
	}
	for _, v := range r.VMs {
		if v.Blackout <= 0 {
			bad("pmvm host restore's timeline shows no blackout for VM %s; output:\n\t%s", v.Name, strings.Join(r.RestoreOutput, "\n\t"))
		}
	}

	// --- the guests after the resume ---
	cpus := "0"
	if want.VCPUs > 1 {
		cpus = fmt.Sprintf("0-%d", want.VCPUs-1)
	}
	err = anyOrder("resumed", names, 3*time.Minute, func(name, rest string) {
		v := r.VM(name)
		v.Resumed = Fields(rest)
		v.L1Date = atoi64(v.Resumed["l1-date"])
		if d := dateRe.FindStringSubmatch(rest); d != nil {
			v.GuestDate = atoi64(d[1])
		}
		v.Skew = v.GuestDate - v.L1Date
		got := ""
		if b := bootIDRe.FindStringSubmatch(rest); b != nil {
			got = b[1]
		}
		v.BootIDAfter = got
		if got != v.BootID {
			bad("VM %s: boot_id %q after the update, %q before: the guest rebooted instead of resuming", name, got, v.BootID)
		}
		if v.Resumed["cpus-online"] != cpus {
			bad("VM %s: cpus-online=%q after the resume, want %q", name, v.Resumed["cpus-online"], cpus)
		}
		if v.Resumed["pm-exit"] != "1" {
			bad("VM %s: %q \"PM: suspend exit\" lines after the resume, want 1 (the update's suspend is the guest's first)", name, v.Resumed["pm-exit"])
		}
		if v.Skew > want.MaxSkew || v.Skew < -want.MaxSkew {
			bad("VM %s: guest wall clock %d vs lab host %d after the resume: off by %d s (max %d)", name, v.GuestDate, v.L1Date, v.Skew, want.MaxSkew)
		}
	})
	if err != nil {
		return r, err
	}
	mark("both guests report their resume")
	err = anyOrder("verified", names, 5*time.Minute, func(name, rest string) {
		v := r.VM(name)
		if _, after, ok := strings.Cut(rest, "pattern-verify "); ok {
			v.Verify, _, _ = strings.Cut(after, " ")
		}
		if v.Verify != "ok" {
			bad("VM %s: guest memory pattern check after the update: %s", name, rest)
		}
	})
	if err != nil {
		return r, err
	}
	mark("both guests' memory patterns checked")
	for range r.VMs {
		m, err := wait(`^PMVM-LAB proc pid=(\d+) config=(\S*) cgroup=(\S*)`, time.Minute)
		if err != nil {
			return r, err
		}
		for _, v := range r.VMs {
			if strings.HasSuffix(m[2], "/"+v.Name+".toml") {
				v.PID, v.Cgroup = int(atoi64(m[1])), m[3]
			}
		}
	}
	for _, v := range r.VMs {
		if v.Cgroup == "" || v.Cgroup == "/" || !strings.Contains(v.Cgroup, v.Name) {
			bad("VM %s: its restored pmvm runs in cgroup %q, want a cgroup of its own", v.Name, v.Cgroup)
		}
		if v.Cgroup != v.CgroupBefore {
			bad("VM %s: its pmvm ran in cgroup %q before the update and runs in %q after it, want the same", v.Name, v.CgroupBefore, v.Cgroup)
		}
		if _, err = wait(`^PMVM-LAB after-status-`+v.Name+`-exit=`, time.Minute); err != nil {
			return r, err
		}
		v.StatusAfter = vm.PrefixedLines("PMVM-LAB after-status-" + v.Name + ": ")
		if st := runstate(v.StatusAfter); !strings.HasPrefix(st, "running") {
			bad("VM %s after the restore: pmvm status says %q, want running", v.Name, st)
		}
	}
	if m, err = wait(`^PMVM-LAB state-dir (.*)`, time.Minute); err != nil {
		return r, err
	}
	r.StateDirAfter = strings.Fields(m[1])
	for _, f := range r.StateDirAfter {
		if strings.HasSuffix(f, ".state") {
			bad("state file %s is still in state_dir after its VM runs again (it must be moved aside)", f)
		}
	}
	if m, err = wait(`^PMVM-LAB scenario-exit=(\d+)`, time.Minute); err != nil {
		return r, err
	}
	r.Hooks = vm.PrefixedLines("PMVM-LAB hooks: ")
	hooks := strings.Join(r.Hooks, "\n")
	if !strings.Contains(hooks, "pre-kexec vms="+strings.Join(names, ",")) {
		bad("the pre-kexec hook left no trace naming %s: %q", strings.Join(names, ","), r.Hooks)
	}
	for _, n := range names {
		if !strings.Contains(hooks, "post-restore vm="+n+" ") {
			bad("the post-restore hook left no trace for VM %s: %q", n, r.Hooks)
		}
	}
	if m[1] != "0" {
		bad("the lab host's scenario exited %s", m[1])
	}
	return r, nil
}

// Summary is the story of an update run for a newcomer: what ran, what
// was refused, each VM's blackout, the kernel before and after.
func (r *UpdateRun) Summary() []string {
	var s []string
	s = append(s, fmt.Sprintf("lab host kernel: %s -> %s (uname -r before and after the kexec)", r.UnameBefore, r.UnameAfter))
	s = append(s, fmt.Sprintf("lab host clock vs this machine: %+.3f s before, %+.3f s after the kexec (the new kernel reads the RTC)", r.L1SkewBefore, r.L1SkewAfter))
	s = append(s, fmt.Sprintf("state_dir on %s (%s), survived the kexec", UpdateStateDev, r.StateFS))
	s = append(s, fmt.Sprintf("refused first: with VM %q (mode none, anonymous RAM) running, pmvm host update exited %d, %d state files written, kernel loaded=%s", VolatileVM, r.RefuseExit, r.RefuseState, r.RefuseLoaded))
	for _, d := range r.Dax {
		s = append(s, fmt.Sprintf("/dev/%s: namespace %s before, %s after the kexec", d.Name, d.UUIDBefore, d.UUIDAfter))
	}
	for _, v := range r.VMs {
		same := "the same before and after: resumed, not rebooted"
		if v.BootIDAfter != v.BootID {
			same = fmt.Sprintf("CHANGED to %q", v.BootIDAfter)
		}
		s = append(s, fmt.Sprintf("VM %s: blackout %s (save requested -> running on the new kernel); boot_id %s %s; memory pattern %s; guest clock %+d s vs the lab host's; cgroup %s before, %s after",
			v.Name, orDash(v.BlackoutText), v.BootID, same, orDash(v.Verify), v.Skew, orDash(v.CgroupBefore), orDash(v.Cgroup)))
	}
	s = append(s, "when (since the lab host started booting):")
	keys := append([]string(nil), r.Steps...)
	sort.SliceStable(keys, func(i, j int) bool { return r.At[keys[i]] < r.At[keys[j]] })
	for _, k := range keys {
		s = append(s, fmt.Sprintf("  %8s  %s", r.At[k].Round(100*time.Millisecond), k))
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
