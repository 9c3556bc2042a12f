package lab

import (
	"fmt"
	"strconv"
	"strings"
)

// VMConfig is the pmvm TOML config the lab writes for a guest (the shape of
// configs.VM; generated as text so the lab does not depend on the package's
// Go API while it evolves).
type VMConfig struct {
	Name    string
	Mode    string // "" (omitted: none), "reboot", "restart"
	VCPUs   int
	Kernel  string
	Initrd  string
	Cmdline string
	Memory  []MemoryBlock
	Console string // "stdout", "file", "none"
	Agent   string // agent socket path
	Control string // control socket path
}

// MemoryBlock is one [[memory]] entry.
type MemoryBlock struct {
	Name    string
	Size    string // e.g. "512MiB"
	Backing string // "anonymous", "memfd" or an absolute path
	Shared  bool
	Create  bool
}

// In-lab paths of the guest parts (see HostSpec).
const (
	LabGuestKernel = "/lab/guest/vmlinuz"
	LabGuestInitrd = "/lab/guest/initrd.cpio"
	LabGuestConfig = "/lab/guest.toml"
	LabPmvm        = "/bin/pmvm"
)

// DefaultGuestConfig is the config TestLabBoot uses: 2 vCPUs, 512 MiB of
// shared anonymous memory, the lab's guest kernel and initrd.
func DefaultGuestConfig() VMConfig {
	return VMConfig{
		Name:    "labguest",
		VCPUs:   2,
		Kernel:  LabGuestKernel,
		Initrd:  LabGuestInitrd,
		Cmdline: "console=ttyS0 panic=-1 quiet",
		Memory:  []MemoryBlock{{Name: "ram0", Size: "512MiB", Backing: "anonymous", Shared: true}},
		Console: "stdout",
		Agent:   "/run/pmvm/labguest/agent.sock",
		Control: "/run/pmvm/labguest/control.sock",
	}
}

// RunDir is the directory holding the VM's sockets (the lab init creates it).
func (c VMConfig) RunDir() string { return "/run/pmvm/" + c.Name }

// TOML renders the config.
func (c VMConfig) TOML() []byte {
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, "name = %s\n", q(c.Name))
	mode := c.Mode
	if mode == "" {
		mode = "none"
	}
	fmt.Fprintf(&b, "mode = %s\n", q(mode))
	fmt.Fprintf(&b, "vcpus = %d\n", c.VCPUs)
	fmt.Fprintf(&b, "[boot]\nkernel = %s\n", q(c.Kernel))
	if c.Initrd != "" {
		fmt.Fprintf(&b, "initrd = %s\n", q(c.Initrd))
	}
	fmt.Fprintf(&b, "cmdline = %s\n", q(c.Cmdline))
	for _, m := range c.Memory {
		fmt.Fprintf(&b, "[[memory]]\nname = %s\nsize = %s\nbacking = %s\nshared = %t\n",
			q(m.Name), q(m.Size), q(m.Backing), m.Shared)
		if m.Create {
			b.WriteString("create = true\n")
		}
	}
	fmt.Fprintf(&b, "[console]\noutput = %s\n", q(c.Console))
	fmt.Fprintf(&b, "[agent]\nsocket = %s\n", q(c.Agent))
	fmt.Fprintf(&b, "[control]\nsocket = %s\n", q(c.Control))
	return []byte(b.String())
}
