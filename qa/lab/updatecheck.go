package lab

import (
	"fmt"
	"regexp"
	"sort"
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

// CheckUpdateRun follows an UpdateScenario run (UpdateHost) from the lab
// host's first line to "scenario-exit" on the new kernel: it reads the
// console as events (ParseUpdateLine) in order, stage by stage, and
// judges each stage's values when the stage is complete. A missing line is
// an error (with the console tail); a line that is there but wrong is a
// Problem.
func CheckUpdateRun(vm *VM, want UpdateExpect, timeout time.Duration) (*UpdateRun, error) {
	if want.MaxSkew == 0 {
		want.MaxSkew = 2
	}
	if want.VCPUs == 0 {
		want.VCPUs = 1
	}
	c := &updateChecker{vm: vm, want: want, t0: time.Now(), outputs: map[string][]string{}}
	c.deadline = c.t0.Add(timeout)
	c.r = newUpdateRun()
	for _, stage := range []func() error{c.oldKernel, c.refusal, c.kexec, c.restore, c.guestsAfter, c.end} {
		if err := stage(); err != nil {
			return c.r, err
		}
	}
	return c.r, nil
}

func newUpdateRun() *UpdateRun {
	r := &UpdateRun{At: map[string]time.Duration{}}
	for _, v := range UpdateVMs {
		r.VMs = append(r.VMs, &UpdateVM{Name: v.Name})
		r.Dax = append(r.Dax, &UpdateDax{Name: v.Dax})
	}
	return r
}

// updateChecker reads one update run's console.
type updateChecker struct {
	vm       *VM
	want     UpdateExpect
	r        *UpdateRun
	t0       time.Time
	deadline time.Time
	// outputs holds the "PMVM-LAB <tag>: <text>" lines read so far, by tag.
	outputs map[string][]string
}

// labLineRe matches every line the lab host's scripts print.
var labLineRe = regexp.MustCompile(`^` + labLinePrefix + `.*`)

// next returns the next lab line's event, waiting at most d (and never
// past the run's deadline). Output lines are kept in c.outputs on the way.
func (c *updateChecker) next(d time.Duration) (UpdateEvent, error) {
	if left := time.Until(c.deadline); d > left {
		d = left
	}
	m, err := c.vm.WaitFor(labLineRe, d)
	if err != nil {
		return nil, err
	}
	ev, _ := ParseUpdateLine(m[0])
	if o, ok := ev.(EvOutput); ok {
		c.outputs[o.Tag] = append(c.outputs[o.Tag], o.Text)
	}
	if e, ok := ev.(EvError); ok {
		return nil, fmt.Errorf("the lab host's scenario failed: %s", e.Msg)
	}
	return ev, nil
}

// until reads events until done accepts one, for at most d; what names
// the awaited line in the error.
func (c *updateChecker) until(what string, d time.Duration, done func(UpdateEvent) bool) (UpdateEvent, error) {
	end := time.Now().Add(d)
	for {
		ev, err := c.next(time.Until(end))
		if err != nil {
			return nil, fmt.Errorf("waiting for %s: %w", what, err)
		}
		if done(ev) {
			return ev, nil
		}
	}
}

// await reads events until one of type T, for at most d.
func await[T UpdateEvent](c *updateChecker, what string, d time.Duration) (T, error) {
	ev, err := c.until(what, d, func(ev UpdateEvent) bool { _, ok := ev.(T); return ok })
	t, _ := ev.(T)
	return t, err
}

// exitOf reads events until the end of command tag and returns its code.
func (c *updateChecker) exitOf(tag string, d time.Duration) (int, error) {
	ev, err := c.until("PMVM-LAB "+tag+"-exit=", d, func(ev UpdateEvent) bool {
		e, ok := ev.(EvExit)
		return ok && e.Tag == tag
	})
	if err != nil {
		return 0, err
	}
	return ev.(EvExit).Code, nil
}

// eachVM reads the watchers' lines of tag until every VM of names has
// one, in any order, and hands each to see.
func (c *updateChecker) eachVM(tag string, names []string, d time.Duration, see func(EvVM)) error {
	left := map[string]bool{}
	for _, n := range names {
		left[n] = true
	}
	for len(left) > 0 {
		ev, err := c.until("PMVM-LAB "+tag+" vm=...", d, func(ev UpdateEvent) bool {
			v, ok := ev.(EvVM)
			return ok && v.Tag == tag
		})
		if err != nil {
			return err
		}
		v := ev.(EvVM)
		if v.Failed {
			return fmt.Errorf("PMVM-LAB %s vm=%s FAILED: %s", v.Tag, v.VM, v.Guest)
		}
		if left[v.VM] {
			delete(left, v.VM)
			see(v)
		}
	}
	return nil
}

func (c *updateChecker) mark(step string) {
	c.r.At[step] = time.Since(c.t0)
	c.r.Steps = append(c.r.Steps, step)
}

func (c *updateChecker) l1Facts(phase string) (string, float64, error) {
	ev, err := c.until("PMVM-LAB l1 phase="+phase, 2*time.Minute, func(ev UpdateEvent) bool {
		f, ok := ev.(EvL1Facts)
		return ok && f.Phase == phase
	})
	if err != nil {
		return "", 0, err
	}
	f := ev.(EvL1Facts)
	return f.Uname, f.Date - float64(time.Now().UnixNano())/1e9, nil
}

// daxLines reads one "dax" line per device-dax namespace.
func (c *updateChecker) daxLines(after bool) error {
	for range c.r.Dax {
		ev, err := await[EvDax](c, "PMVM-LAB dax name=...", time.Minute)
		if err != nil {
			return err
		}
		if d := c.r.dax(ev.Name); d != nil {
			d.see(ev, after)
		}
	}
	return nil
}

func carriedNames() []string {
	names := make([]string, len(UpdateVMs))
	for i, v := range UpdateVMs {
		names[i] = v.Name
	}
	return names
}

// oldKernel: the lab host's facts, its device-dax, state_dir, cgroups and
// both guests ready.
func (c *updateChecker) oldKernel() error {
	r := c.r
	var err error
	if r.UnameBefore, r.L1SkewBefore, err = c.l1Facts("boot"); err != nil {
		return err
	}
	c.mark("lab host up (" + r.UnameBefore + ")")
	r.Problems = append(r.Problems, judgeUname("the lab host booted", r.UnameBefore, c.want.From)...)
	if err := c.daxLines(false); err != nil {
		return err
	}
	fs, err := await[EvStateFS](c, "PMVM-LAB state-fs", time.Minute)
	if err != nil {
		return err
	}
	r.StateFS = fs.Type
	r.Problems = append(r.Problems, judgeStateFS(fs.Type)...)
	cg, err := await[EvCgroup2](c, "PMVM-LAB cgroup2", time.Minute)
	if err != nil {
		return err
	}
	r.Cgroup2 = cg.Controllers
	err = c.eachVM("vm-ready", carriedNames(), 8*time.Minute, func(ev EvVM) {
		v := r.VM(ev.VM)
		v.BootID, v.ReadySeen, v.ReadyDate = ev.Fields["boot_id"], ev.L1Date, atoi64(ev.Fields["date"])
		r.Problems = append(r.Problems, judgeReady(v)...)
	})
	if err != nil {
		return err
	}
	c.mark("both guests ready (qemu-ga up, pattern filled)")
	for range r.VMs {
		ev, err := await[EvCgroupBefore](c, "PMVM-LAB cgroup-before", time.Minute)
		if err != nil {
			return err
		}
		if v := r.VM(ev.VM); v != nil {
			v.CgroupBefore = ev.Cgroup
		}
	}
	return nil
}

// refusal: with the volatile VM running, pmvm host update must refuse
// and leave everything as it was.
func (c *updateChecker) refusal() error {
	r := c.r
	if err := c.eachVM("vm-ready", []string{VolatileVM}, 5*time.Minute, func(EvVM) {}); err != nil {
		return err
	}
	c.mark("VM " + VolatileVM + " (mode none, anonymous RAM) running")
	var err error
	if r.RefuseExit, err = c.exitOf("refuse", 2*time.Minute); err != nil {
		return err
	}
	r.RefuseOutput = c.outputs["refuse"]
	c.mark("pmvm host update refused")
	r.RefusalProblems = append(r.RefusalProblems, judgeRefusal(r.RefuseExit, r.RefuseOutput)...)
	for _, v := range r.VMs {
		tag := "refuse-status-" + v.Name
		if _, err := c.exitOf(tag, time.Minute); err != nil {
			return err
		}
		v.RefuseStatus = c.outputs[tag]
		r.RefusalProblems = append(r.RefusalProblems, judgeRunning("VM "+v.Name+" after the refused update", v.RefuseStatus)...)
	}
	after, err := await[EvAfterRefusal](c, "PMVM-LAB after-refusal", time.Minute)
	if err != nil {
		return err
	}
	r.RefuseState, r.RefuseLoaded = after.StateFiles, after.KexecLoaded
	r.RefusalProblems = append(r.RefusalProblems, judgeAfterRefusal(after)...)
	stopped, err := c.until("PMVM-LAB stopped vm="+VolatileVM, time.Minute, func(ev UpdateEvent) bool {
		s, ok := ev.(EvStopped)
		return ok && s.VM == VolatileVM
	})
	if err != nil {
		return err
	}
	r.VolatileExit = stopped.(EvStopped).Exit
	if r.VolatileExit != 4 {
		r.RefusalProblems = append(r.RefusalProblems, fmt.Sprintf("pmvm of VM %s exited %d after SIGTERM, want 4", VolatileVM, r.VolatileExit))
	}
	return nil
}

// kexec: the update starts and the lab host comes up on the new kernel
// with the same device-dax namespaces.
func (c *updateChecker) kexec() error {
	r := c.r
	if _, err := await[EvUpdateStart](c, "PMVM-LAB update-start", time.Minute); err != nil {
		return err
	}
	c.mark("pmvm host update started")
	ev, err := c.until("PMVM-LAB init <kernel> phase=restore", 4*time.Minute, func(ev UpdateEvent) bool {
		i, ok := ev.(EvInit)
		return ok && i.Phase == "restore"
	})
	if err != nil {
		return fmt.Errorf("the lab host did not come up on the new kernel: %w", err)
	}
	c.mark("new kernel's init (" + ev.(EvInit).Uname + ")")
	if r.UnameAfter, r.L1SkewAfter, err = c.l1Facts("restore"); err != nil {
		return err
	}
	r.Problems = append(r.Problems, judgeUname("after the update the lab host runs", r.UnameAfter, c.want.To)...)
	if r.UnameAfter == r.UnameBefore {
		r.Problems = append(r.Problems, fmt.Sprintf("uname -r is %s before and after the update: no new kernel", r.UnameAfter))
	}
	if err := c.daxLines(true); err != nil {
		return err
	}
	for _, d := range r.Dax {
		r.Problems = append(r.Problems, judgeDax(d)...)
	}
	return nil
}

// restore: pmvm host restore, and the update's output read back.
func (c *updateChecker) restore() error {
	r := c.r
	var err error
	if r.RestoreExit, err = c.exitOf("restore", 3*time.Minute); err != nil {
		return err
	}
	r.RestoreOutput = c.outputs["restore"]
	c.mark("pmvm host restore done")
	if r.RestoreExit != 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("pmvm host restore exited %d; output:\n\t%s", r.RestoreExit, strings.Join(r.RestoreOutput, "\n\t")))
	}
	if _, err := await[EvUpdateOutputEnd](c, "PMVM-LAB update-output-end", time.Minute); err != nil {
		return err
	}
	r.UpdateOutput = c.outputs["update"]
	r.Problems = append(r.Problems, judgeUpdateOutput(r.UpdateOutput, carriedNames())...)
	blackouts := parseBlackouts(r.RestoreOutput)
	for _, v := range r.VMs {
		v.BlackoutText = blackouts[v.Name]
		v.Blackout, _ = time.ParseDuration(v.BlackoutText)
		if v.Blackout <= 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("pmvm host restore's timeline shows no blackout for VM %s; output:\n\t%s", v.Name, strings.Join(r.RestoreOutput, "\n\t")))
		}
	}
	return nil
}

// guestsAfter: both guests report their resume and check their memory;
// each pmvm runs in its cgroup again and says running.
func (c *updateChecker) guestsAfter() error {
	r := c.r
	err := c.eachVM("resumed", carriedNames(), 3*time.Minute, func(ev EvVM) {
		v := r.VM(ev.VM)
		v.Resumed, v.L1Date, v.GuestDate = ev.Fields, ev.L1Date, atoi64(ev.Fields["date"])
		v.Skew = v.GuestDate - v.L1Date
		v.BootIDAfter = ev.Fields["boot_id"]
		r.Problems = append(r.Problems, judgeResumed(v, c.want)...)
	})
	if err != nil {
		return err
	}
	c.mark("both guests report their resume")
	err = c.eachVM("verified", carriedNames(), 5*time.Minute, func(ev EvVM) {
		v := r.VM(ev.VM)
		if _, after, ok := strings.Cut(ev.Guest, "pattern-verify "); ok {
			v.Verify, _, _ = strings.Cut(after, " ")
		}
		if v.Verify != "ok" {
			r.Problems = append(r.Problems, fmt.Sprintf("VM %s: guest memory pattern check after the update: %s", v.Name, ev.Guest))
		}
	})
	if err != nil {
		return err
	}
	c.mark("both guests' memory patterns checked")
	for range r.VMs {
		p, err := await[EvProc](c, "PMVM-LAB proc pid=...", time.Minute)
		if err != nil {
			return err
		}
		for _, v := range r.VMs {
			if strings.HasSuffix(p.Config, "/"+v.Name+".toml") {
				v.PID, v.Cgroup = p.PID, p.Cgroup
			}
		}
	}
	for _, v := range r.VMs {
		r.Problems = append(r.Problems, judgeCgroup(v)...)
		tag := "after-status-" + v.Name
		if _, err := c.exitOf(tag, time.Minute); err != nil {
			return err
		}
		v.StatusAfter = c.outputs[tag]
		r.Problems = append(r.Problems, judgeRunning("VM "+v.Name+" after the restore", v.StatusAfter)...)
	}
	return nil
}

// end: state_dir emptied of state files, the hooks' traces, the exit.
func (c *updateChecker) end() error {
	r := c.r
	dir, err := await[EvStateDir](c, "PMVM-LAB state-dir", time.Minute)
	if err != nil {
		return err
	}
	r.StateDirAfter = dir.Names
	r.Problems = append(r.Problems, judgeStateDir(dir.Names)...)
	exit, err := await[EvScenarioExit](c, "PMVM-LAB scenario-exit=", time.Minute)
	if err != nil {
		return err
	}
	r.Hooks = c.outputs["hooks"]
	r.Problems = append(r.Problems, judgeHooks(r.Hooks, carriedNames())...)
	if exit.Code != 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("the lab host's scenario exited %d", exit.Code))
	}
	return nil
}

func (r *UpdateRun) dax(name string) *UpdateDax {
	for _, d := range r.Dax {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// see records a dax line from before or after the kexec.
func (d *UpdateDax) see(ev EvDax, after bool) {
	if after {
		d.SizeAfter, d.UUIDAfter, d.SeenAfter = ev.Size, ev.UUID, true
	} else {
		d.SizeBefore, d.UUIDBefore, d.SeenBefore = ev.Size, ev.UUID, true
	}
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
