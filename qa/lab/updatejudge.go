package lab

import (
	"fmt"
	"regexp"
	"strings"
)

// The update lab's judges: each looks at the values of one stage of an
// update run (CheckUpdateRun) and says what is wrong, one Problem a line.

// a blackout line of the timeline: "  vm1  16.79s"
var blackoutRe = regexp.MustCompile(`^\s+(\S+)\s+(\S+)$`)

func judgeUname(what, got, want string) []string {
	if want != "" && got != want {
		return []string{fmt.Sprintf("%s %s, want %s", what, got, want)}
	}
	return nil
}

func judgeStateFS(fs string) []string {
	if fs == "tmpfs" || fs == "ramfs" {
		return []string{fmt.Sprintf("state_dir is on %s, which does not survive a kexec", fs)}
	}
	return nil
}

func judgeReady(v *UpdateVM) []string {
	if v.BootID == "" {
		return []string{fmt.Sprintf("VM %s: no boot_id in its ready line", v.Name)}
	}
	return nil
}

func judgeRefusal(exit int, output []string) []string {
	var p []string
	out := strings.Join(output, "\n")
	shown := strings.Join(output, "\n\t")
	if exit != 1 {
		p = append(p, fmt.Sprintf("pmvm host update with VM %s running exited %d, want 1 (refused); output:\n\t%s", VolatileVM, exit, shown))
	}
	if !strings.Contains(out, `VM "`+VolatileVM+`"`) || !strings.Contains(out, "cannot be preserved") {
		p = append(p, fmt.Sprintf("the refusal does not name VM %q as one that cannot be preserved; output:\n\t%s", VolatileVM, shown))
	}
	if !strings.Contains(out, "refused before anything was suspended") {
		p = append(p, fmt.Sprintf("the refusal does not say nothing was suspended; output:\n\t%s", shown))
	}
	return p
}

// judgeRunning holds pmvm status output to "running".
func judgeRunning(what string, status []string) []string {
	if st := runstate(status); !strings.HasPrefix(st, "running") {
		return []string{fmt.Sprintf("%s: pmvm status says %q, want running", what, st)}
	}
	return nil
}

func judgeAfterRefusal(ev EvAfterRefusal) []string {
	var p []string
	if ev.StateFiles != 0 {
		p = append(p, fmt.Sprintf("the refused update left %d state files in state_dir", ev.StateFiles))
	}
	if ev.KexecLoaded != "0" {
		p = append(p, fmt.Sprintf("the refused update left a kernel loaded (/sys/kernel/kexec_loaded = %s)", ev.KexecLoaded))
	}
	return p
}

func judgeDax(d *UpdateDax) []string {
	if !d.SeenBefore || !d.SeenAfter {
		return []string{fmt.Sprintf("/dev/%s: seen before the kexec %v, after it %v", d.Name, d.SeenBefore, d.SeenAfter)}
	}
	var p []string
	if d.UUIDBefore == "" || d.UUIDAfter != d.UUIDBefore {
		p = append(p, fmt.Sprintf("/dev/%s: namespace uuid %q before the kexec, %q after", d.Name, d.UUIDBefore, d.UUIDAfter))
	}
	if d.SizeAfter != d.SizeBefore {
		p = append(p, fmt.Sprintf("/dev/%s: %d bytes before the kexec, %d after", d.Name, d.SizeBefore, d.SizeAfter))
	}
	return p
}

// judgeUpdateOutput holds pmvm host update's output (read back after the
// kexec) to its timeline, the kexec and a save of every VM of names.
func judgeUpdateOutput(output []string, names []string) []string {
	var p []string
	uo := strings.Join(output, "\n")
	for _, want := range []string{"host update timeline", "kexec into " + LabNextKernel} {
		if !strings.Contains(uo, want) {
			p = append(p, fmt.Sprintf("pmvm host update's output (read back after the kexec) has no %q; output:\n\t%s", want, strings.Join(output, "\n\t")))
		}
	}
	for _, n := range names {
		if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(n) + `\s+saved in \S+ -> `).MatchString(uo) {
			p = append(p, fmt.Sprintf("pmvm host update's output does not say VM %s was saved", n))
		}
	}
	return p
}

// parseBlackouts reads the "blackout" table of pmvm host restore's
// timeline: VM name -> its blackout as printed ("16.79s").
func parseBlackouts(restore []string) map[string]string {
	out := map[string]string{}
	in := false
	for _, l := range restore {
		if strings.HasPrefix(l, "blackout ") {
			in = true
			continue
		}
		if !in {
			continue
		}
		b := blackoutRe.FindStringSubmatch(l)
		if b == nil {
			in = false
			continue
		}
		out[b[1]] = b[2]
	}
	return out
}

// judgeResumed holds a carried guest's resume report to the same boot,
// every vCPU online, one suspend and a wall clock near the lab host's.
func judgeResumed(v *UpdateVM, want UpdateExpect) []string {
	cpus := "0"
	if want.VCPUs > 1 {
		cpus = fmt.Sprintf("0-%d", want.VCPUs-1)
	}
	var p []string
	if v.BootIDAfter != v.BootID {
		p = append(p, fmt.Sprintf("VM %s: boot_id %q after the update, %q before: the guest rebooted instead of resuming", v.Name, v.BootIDAfter, v.BootID))
	}
	if v.Resumed["cpus-online"] != cpus {
		p = append(p, fmt.Sprintf("VM %s: cpus-online=%q after the resume, want %q", v.Name, v.Resumed["cpus-online"], cpus))
	}
	if v.Resumed["pm-exit"] != "1" {
		p = append(p, fmt.Sprintf("VM %s: %q \"PM: suspend exit\" lines after the resume, want 1 (the update's suspend is the guest's first)", v.Name, v.Resumed["pm-exit"]))
	}
	if v.Skew > want.MaxSkew || v.Skew < -want.MaxSkew {
		p = append(p, fmt.Sprintf("VM %s: guest wall clock %d vs lab host %d after the resume: off by %d s (max %d)", v.Name, v.GuestDate, v.L1Date, v.Skew, want.MaxSkew))
	}
	return p
}

func judgeCgroup(v *UpdateVM) []string {
	var p []string
	if v.Cgroup == "" || v.Cgroup == "/" || !strings.Contains(v.Cgroup, v.Name) {
		p = append(p, fmt.Sprintf("VM %s: its restored pmvm runs in cgroup %q, want a cgroup of its own", v.Name, v.Cgroup))
	}
	if v.Cgroup != v.CgroupBefore {
		p = append(p, fmt.Sprintf("VM %s: its pmvm ran in cgroup %q before the update and runs in %q after it, want the same", v.Name, v.CgroupBefore, v.Cgroup))
	}
	return p
}

func judgeStateDir(names []string) []string {
	var p []string
	for _, f := range names {
		if strings.HasSuffix(f, ".state") {
			p = append(p, fmt.Sprintf("state file %s is still in state_dir after its VM runs again (it must be moved aside)", f))
		}
	}
	return p
}

func judgeHooks(hooks []string, names []string) []string {
	var p []string
	all := strings.Join(hooks, "\n")
	if !strings.Contains(all, "pre-kexec vms="+strings.Join(names, ",")) {
		p = append(p, fmt.Sprintf("the pre-kexec hook left no trace naming %s: %q", strings.Join(names, ","), hooks))
	}
	for _, n := range names {
		if !strings.Contains(all, "post-restore vm="+n+" ") {
			p = append(p, fmt.Sprintf("the post-restore hook left no trace for VM %s: %q", n, hooks))
		}
	}
	return p
}
