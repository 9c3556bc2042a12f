package kexec

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/pmem/memspec"
)

// Print writes the plan for the operator: the host, the VMs and the
// verdict.
func (p *Plan) Print(w io.Writer) {
	p.printHost(w)
	fmt.Fprintln(w)
	p.printVMs(w)
	fmt.Fprintln(w)
	if skipped := p.Skipped(); p.SkipUnsaveable && len(skipped) > 0 {
		fmt.Fprintf(w, "--skip-unsaveable: the kexec will kill %d VM(s) unsaved, their guests LOST:\n", len(skipped))
		for _, v := range skipped {
			fmt.Fprintf(w, "  VM %q (%s): %s\n", v.Name, v.Config, v.Reason)
		}
		fmt.Fprintln(w, "  (and any VM whose save fails during the update)")
	}
	if err := p.Err(); err != nil {
		fmt.Fprintln(w, err)
		return
	}
	fmt.Fprintf(w, "the update would save %d VM(s), load %s and kexec into it\n", len(p.Carried()), p.Kernel)
}

// printHost writes what the update will do on the host: kernel, kexec,
// state dir, timeline, cgroups, hooks.
func (p *Plan) printHost(w io.Writer) {
	fmt.Fprintf(w, "host config:  %s\n", orDash(p.HostConfig))
	fmt.Fprintf(w, "kernel:       %s\n", orDash(p.kernelLine()))
	fmt.Fprintf(w, "initrd:       %s\n", orNone(p.Initrd))
	fmt.Fprintf(w, "cmdline:      %q\n", p.Cmdline)
	fmt.Fprintf(w, "kexec:        %s\n", p.kexecLine())
	fmt.Fprintf(w, "state dir:    %s (%s)\n", p.Host.StateDir, orDash(p.StateFS))
	fmt.Fprintf(w, "timeline:     %s\n", p.Host.TimelinePath())
	fmt.Fprintf(w, "cgroups:      %s\n", p.cgroupsLine())
	p.printHooks(w)
}

// kernelLine is the kernel with its boot protocol and version, when known.
func (p *Plan) kernelLine() string {
	if p.KernelInfo == nil {
		return p.Kernel
	}
	s := fmt.Sprintf("%s (boot protocol %d.%02d", p.Kernel, p.KernelInfo.Protocol>>8, p.KernelInfo.Protocol&0xff)
	if p.KernelInfo.Version != "" {
		s += ", " + p.KernelInfo.Version
	}
	return s + ")"
}

func (p *Plan) kexecLine() string {
	kx := "not supported"
	if p.Kexec.Supported {
		kx = "supported"
		if p.Kexec.Loaded {
			kx += ", a kernel is loaded already (it will be replaced)"
		}
	}
	if p.Kexec.Lockdown != "" {
		kx += ", lockdown " + p.Kexec.Lockdown
	}
	return kx
}

// cgroupsLine is the cgroup layout, parent and default limits, or "off".
func (p *Plan) cgroupsLine() string {
	l := p.Host.Limits
	if !l.CgroupsEnabled() {
		return "off"
	}
	var lim []string
	if l.CPUWeight > 0 {
		lim = append(lim, fmt.Sprintf("cpu_weight %d", l.CPUWeight))
	}
	if l.VMMMemoryOverhead > 0 {
		lim = append(lim, fmt.Sprintf("memory = guest RAM + %s", l.VMMMemoryOverhead))
	}
	if l.Pids > 0 {
		lim = append(lim, fmt.Sprintf("pids %d", l.Pids))
	}
	if len(lim) == 0 {
		lim = append(lim, "none")
	}
	parent := l.CgroupParent
	if parent == "" {
		parent = "default"
	}
	return fmt.Sprintf("%s, parent %s, defaults %s (a VM config's [limits] overrides them)", p.CgroupMode, parent, strings.Join(lim, ", "))
}

// printHooks writes one line per hook phase, "-" where none is set.
func (p *Plan) printHooks(w io.Writer) {
	for i, phase := range configs.Phases {
		label := "              "
		if i == 0 {
			label = "hooks:        "
		}
		desc := "-"
		if h := p.Host.Hooks.Get(phase); h != nil {
			desc = fmt.Sprintf("%s (timeout %s)", strings.Join(h.Command, " "), h.Timeout)
		}
		fmt.Fprintf(w, "%s%-13s %s\n", label, phase+":", desc)
	}
}

// printVMs writes the table of VMs to carry with their verdicts, their
// notes, the idle VMs and the plan's notes.
func (p *Plan) printVMs(w io.Writer) {
	if len(p.VMs) == 0 {
		fmt.Fprintln(w, "no running VM to carry over")
	} else {
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "VM\tCONFIG\tRUNSTATE\tMEMORY\tVERDICT\tSTATE FILE")
		for _, v := range p.VMs {
			verdict := "ok: " + memorySummary(v.Blocks)
			if !v.OK {
				verdict = "REFUSED: " + v.Reason
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Config, v.RunState, memspec.FormatSize(v.Memory), verdict, orDash(v.StatePath))
		}
		tw.Flush()
	}
	for _, v := range p.VMs {
		for _, n := range v.Notes {
			fmt.Fprintf(w, "  %s: %s\n", v.Name, n)
		}
	}
	if len(p.Idle) > 0 {
		var idle []string
		for _, v := range p.Idle {
			idle = append(idle, fmt.Sprintf("%s (%s)", v.Name, v.Config))
		}
		fmt.Fprintf(w, "not running, left alone: %s\n", strings.Join(idle, ", "))
	}
	for _, n := range p.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// memorySummary is "ram0 devdax survives-kexec" for each block.
func memorySummary(blocks []pmem.BlockReport) string {
	var parts []string
	for _, b := range blocks {
		parts = append(parts, fmt.Sprintf("%s %s %s", b.Block, b.Kind, b.Class))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
