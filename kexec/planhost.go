package kexec

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/vmm/cgroup"
)

// checkHost checks the kernel, kexec, state_dir, cgroups and hooks; each
// problem found goes to p.Problems.
func (p *Plan) checkHost(opts PlanOptions) {
	p.checkKernel()
	status := HostStatus
	if opts.KexecStatus != nil {
		status = opts.KexecStatus
	}
	p.Kexec = status()
	if p.Kexec.Problem != "" {
		p.problem("this host cannot kexec: %s", p.Kexec.Problem)
	}
	p.checkStateDir()
	if p.Host.Limits.CgroupsEnabled() {
		p.CgroupMode = cgroup.DetectMode()
		if p.CgroupMode == cgroup.Unavailable {
			p.problem("cgroups: no cgroup filesystem at /sys/fs/cgroup, so restored VMs could not get their cgroups; mount one or set [limits] cgroups = false")
		}
	}
	p.checkHooks()
}

func (p *Plan) problem(format string, a ...any) {
	p.Problems = append(p.Problems, fmt.Sprintf(format, a...))
}

// checkKernel checks the kernel, initrd and command line to kexec into.
func (p *Plan) checkKernel() {
	if p.Kernel == "" {
		p.problem("no kernel: give --kernel /boot/vmlinuz-VERSION")
	} else if bz, err := CheckKernel(p.Kernel); err != nil {
		p.problem("%v", err)
	} else {
		p.KernelInfo = bz
	}
	if p.Initrd != "" {
		if f, err := os.Open(p.Initrd); err != nil {
			p.problem("initrd: %v", err)
		} else {
			f.Close()
		}
	}
	if len(p.Cmdline) > MaxCmdline {
		p.problem("the command line is %d bytes; the kernel takes at most %d", len(p.Cmdline), MaxCmdline)
	}
}

// checkStateDir checks that state_dir survives the kexec: it looks at the
// filesystem of the directory (or of its nearest existing parent, if it is
// still to be created).
func (p *Plan) checkStateDir() {
	dir := p.Host.StateDir
	for {
		if _, err := os.Stat(dir); err == nil || dir == "/" {
			break
		}
		dir = filepath.Dir(dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		p.problem("state_dir %s: %v", p.Host.StateDir, err)
		return
	}
	p.StateFS = fsName(st.Type)
	switch st.Type {
	case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC:
		p.problem("state_dir %s is on %s, which a kexec empties: the state files would be lost; put state_dir on a disk filesystem", p.Host.StateDir, p.StateFS)
	}
}

// checkHooks checks that every configured hook is an executable file.
func (p *Plan) checkHooks() {
	for _, phase := range configs.Phases {
		h := p.Host.Hooks.Get(phase)
		if h == nil || len(h.Command) == 0 {
			continue
		}
		fi, err := os.Stat(h.Command[0])
		switch {
		case err != nil:
			p.problem("hooks.%s: %v", phase, err)
		case fi.IsDir() || fi.Mode()&0o111 == 0:
			p.problem("hooks.%s: %s is not an executable file", phase, h.Command[0])
		}
	}
}

// fsName names a statfs f_type for the plan.
func fsName(t int64) string {
	switch t {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.RAMFS_MAGIC:
		return "ramfs"
	case unix.EXT4_SUPER_MAGIC: // ext2 and ext3 share it
		return "ext2/3/4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("filesystem %#x", t)
}
