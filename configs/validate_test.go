package configs

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// validVM is a config that passes Validate; each refusal test changes one
// thing in it.
func validVM() *VM {
	return &VM{
		Name:  "demo",
		Mode:  memspec.ModeNone,
		VCPUs: 2,
		Boot: Boot{
			Kernel:  "/var/lib/pmvm/images/vmlinuz",
			Cmdline: "console=ttyS0",
		},
		Memory: []Memory{
			{Name: "ram0", Size: Size(512 * memspec.MiB), Backing: memspec.BackingAnonymous},
			{Name: "ram1", Size: Size(512 * memspec.MiB), Backing: "/dev/shm/demo-ram1", Shared: true, Create: true},
		},
		Console: Console{Output: ConsoleStdout},
		Agent:   Agent{Socket: "/run/pmvm/demo/agent.sock"},
		Control: Control{Socket: "/run/pmvm/demo/control.sock"},
	}
}

func TestValidVM(t *testing.T) {
	require.NoError(t, validVM().Validate())
}

// Settings that are valid and sit at the edges of what Validate accepts.
func TestValidateAccepts(t *testing.T) {
	for _, tc := range []struct {
		proves string
		mutate func(v *VM)
	}{
		{"the zero console output means stdout", func(v *VM) { v.Console.Output = "" }},
		{"one vCPU is enough", func(v *VM) { v.VCPUs = 1 }},
		{"254 vCPUs is the maximum", func(v *VM) { v.VCPUs = MaxVCPUs }},
		{"a 63-byte name with . - _", func(v *VM) { v.Name = "a" + strings.Repeat("b.-_", 15) + "c" }},
		{"64MiB total is the minimum", func(v *VM) { v.Memory = v.Memory[:1]; v.Memory[0].Size = Size(MinMemory) }},
		{"1TiB total is the maximum", func(v *VM) { v.Memory[0].Size = Size(MaxMemory - 512*memspec.MiB) }},
		{"anonymous memory may be shared", func(v *VM) { v.Memory[0].Shared = true }},
		{"memfd backing", func(v *VM) { v.Memory[0].Backing = memspec.BackingMemfd; v.Memory[0].Shared = true }},
		{"a device-dax path is just a path here", func(v *VM) { v.Memory[1].Backing = "/dev/dax0.0"; v.Memory[1].Create = false }},
		{"console to a file", func(v *VM) { v.Console = Console{Output: ConsoleFile, Path: "/var/log/demo.log"} }},
		{"console discarded", func(v *VM) { v.Console.Output = ConsoleNone }},
		{"console file capped", func(v *VM) {
			v.Console = Console{Output: ConsoleFile, Path: "/var/log/demo.log", MaxSize: Size(MinConsoleMaxSize)}
		}},
		{"a socket path of exactly 107 bytes", func(v *VM) { v.Agent.Socket = "/" + strings.Repeat("a", MaxSocketPath-1) }},
		{"restart mode with memfd and a shared file", func(v *VM) {
			v.Mode = memspec.ModeRestart
			v.Memory[0].Backing, v.Memory[0].Shared = memspec.BackingMemfd, true
		}},
		{"reboot mode with file backings", func(v *VM) {
			v.Mode = memspec.ModeReboot
			v.Memory[0] = Memory{Name: "ram0", Size: Size(memspec.GiB), Backing: "/dev/dax0.0", Shared: true}
		}},
		{"a file may declare preserved_across_kexec (pmem accepts it on tmpfs only)", func(v *VM) {
			v.Mode = memspec.ModeReboot
			v.Memory[0] = Memory{Name: "ram0", Size: Size(memspec.GiB), Backing: "/dev/dax0.0", Shared: true}
			v.Memory[1].PreservedAcrossKexec = true
		}},
		// The mode is judged against each backing by pmem.Check (pmvm check,
		// pmvm run), which names the block and its class; Validate leaves
		// it alone, so that pmvm check can still print every block.
		{"reboot mode with anonymous memory is pmem's to refuse", func(v *VM) { v.Mode = memspec.ModeReboot }},
		{"reboot mode with memfd is pmem's to refuse", func(v *VM) {
			v.Mode = memspec.ModeReboot
			v.Memory[0].Backing, v.Memory[0].Shared = memspec.BackingMemfd, true
		}},
		{"restart mode with anonymous memory is pmem's to refuse", func(v *VM) { v.Mode = memspec.ModeRestart }},
	} {
		t.Run(tc.proves, func(t *testing.T) {
			v := validVM()
			tc.mutate(v)
			require.NoError(t, v.Validate())
		})
	}
}

// Each refusal: one change to a valid config gives exactly one problem,
// naming the field and saying what is wrong.
func TestValidateRefuses(t *testing.T) {
	for _, tc := range []struct {
		proves string
		mutate func(v *VM)
		want   string // the whole problem, "field: message"
	}{
		{"the name is required", func(v *VM) { v.Name = "" },
			`name: missing; set e.g. name = "demo"`},
		{"names are lower case", func(v *VM) { v.Name = "Demo" },
			`name: "Demo" must match`},
		{"names do not start with a dot", func(v *VM) { v.Name = ".demo" },
			`name: ".demo" must match`},
		{"names do not contain a slash", func(v *VM) { v.Name = "a/b" },
			`name: "a/b" must match`},
		{"names are at most 63 bytes", func(v *VM) { v.Name = strings.Repeat("a", 64) },
			`name: "` + strings.Repeat("a", 64) + `" must match`},
		{"mode is one of three", func(v *VM) { v.Mode = "suspend" },
			`mode: "suspend" is not one of "none", "reboot", "restart"`},
		{"vcpus is required", func(v *VM) { v.VCPUs = 0 },
			`vcpus: missing; set vcpus = 1..254`},
		{"vcpus is at most 254", func(v *VM) { v.VCPUs = 255 },
			`vcpus: 255 is out of range 1..254`},
		{"vcpus is positive", func(v *VM) { v.VCPUs = -1 },
			`vcpus: -1 is out of range 1..254`},
		{"the kernel is required", func(v *VM) { v.Boot.Kernel = "" },
			`boot.kernel: missing; set the absolute path of a bzImage`},
		{"the kernel path is absolute", func(v *VM) { v.Boot.Kernel = "images/vmlinuz" },
			`boot.kernel: "images/vmlinuz" is not an absolute path`},
		{"paths are clean", func(v *VM) { v.Boot.Kernel = "/var/lib/../vmlinuz" },
			`boot.kernel: "/var/lib/../vmlinuz" is not in clean form; write "/var/vmlinuz"`},
		{"paths have no NUL byte", func(v *VM) { v.Boot.Kernel = "/vmlinuz\x00" },
			`boot.kernel: "/vmlinuz\x00" contains a NUL byte`},
		{"the initrd path is absolute", func(v *VM) { v.Boot.Initrd = "initrd.cpio" },
			`boot.initrd: "initrd.cpio" is not an absolute path`},
		{"the command line fits the kernel's buffer", func(v *VM) { v.Boot.Cmdline = strings.Repeat("x", 2048) },
			`boot.cmdline: 2048 bytes long; the kernel accepts at most 2047`},
		{"at least one memory block", func(v *VM) { v.Memory = nil },
			`memory: no [[memory]] block`},
		{"a block needs a name", func(v *VM) { v.Memory[1].Name = "" },
			`memory[1]: name missing; set e.g. name = "ram1"`},
		{"block names are [a-z0-9_-]+", func(v *VM) { v.Memory[1].Name = "ram.1" },
			`memory[1] "ram.1": name must match ^[a-z0-9_-]+$`},
		{"block names are unique", func(v *VM) { v.Memory[1].Name = "ram0" },
			`memory[1] "ram0": name already used by memory[0]; block names must be unique`},
		{"a block needs a size", func(v *VM) { v.Memory[1].Size = 0 },
			`memory[1] "ram1": size missing or zero`},
		{"sizes are multiples of 2MiB", func(v *VM) { v.Memory[1].Size = Size(3 * memspec.MiB) },
			`memory[1] "ram1": size 3MiB is not a multiple of 2MiB`},
		{"odd byte sizes are shown in bytes", func(v *VM) { v.Memory[1].Size = Size(512*memspec.MiB + 1) },
			`memory[1] "ram1": size 536870913 is not a multiple of 2MiB`},
		{"a block needs a backing", func(v *VM) { v.Memory[0].Backing = "" },
			`memory[0] "ram0": backing missing`},
		{"a backing path is absolute", func(v *VM) { v.Memory[1].Backing = "shm/ram1" },
			`memory[1] "ram1": backing "shm/ram1" is not an absolute path (or use "anonymous" or "memfd")`},
		{"a file backing must be shared", func(v *VM) { v.Memory[1].Shared = false },
			`memory[1] "ram1": a file backing must be mapped shared (or guest writes would not reach it); set shared = true`},
		{"a memfd backing must be shared", func(v *VM) { v.Memory[0].Backing = memspec.BackingMemfd },
			`memory[0] "ram0": a memfd backing must be mapped shared`},
		{"create is for file backings only", func(v *VM) { v.Memory[0].Create = true },
			`memory[0] "ram0": create = true applies to file backings only, not "anonymous"`},
		{"two blocks never map the same file", func(v *VM) {
			v.Memory[0] = Memory{Name: "ram0", Size: Size(memspec.MiB * 2), Backing: "/dev/shm/demo-ram1", Shared: true}
		}, `memory[1] "ram1": backing /dev/shm/demo-ram1 is already used by memory[0]`},
		{"total memory is at least 64MiB", func(v *VM) { v.Memory = v.Memory[:1]; v.Memory[0].Size = Size(62 * memspec.MiB) },
			`memory: total 62MiB is less than the minimum 64MiB`},
		{"total memory is at most 1TiB", func(v *VM) { v.Memory[0].Size = Size(memspec.TiB) },
			`memory: total 1049088MiB is more than the maximum 1TiB`},
		{"a total that overflows 64 bits is refused, not wrapped", func(v *VM) {
			v.Memory[0].Size = Size(^uint64(0) - 2*memspec.MiB + 1)
			v.Memory[1].Size = Size(4 * memspec.MiB)
		}, `memory: total (more than 2^64 bytes) is more than the maximum 1TiB`},
		{"preserved_across_kexec is not for anonymous memory", func(v *VM) { v.Memory[0].PreservedAcrossKexec = true },
			`memory[0] "ram0": preserved_across_kexec = true applies to files on tmpfs or /dev/shm only, not "anonymous"`},
		{"preserved_across_kexec is not for memfd", func(v *VM) {
			v.Memory[0].Backing, v.Memory[0].Shared, v.Memory[0].PreservedAcrossKexec = memspec.BackingMemfd, true, true
		}, `memory[0] "ram0": preserved_across_kexec = true applies to files on tmpfs or /dev/shm only, not "memfd"`},
		{"console output is one of three", func(v *VM) { v.Console.Output = "serial" },
			`console.output: "serial" is not one of "stdout", "file", "none"`},
		{"console output to a file needs a path", func(v *VM) { v.Console.Output = ConsoleFile },
			`console.path: missing; output = "file" needs path = "/absolute/file"`},
		{"a console path without output = file is a mistake", func(v *VM) { v.Console.Path = "/var/log/demo.log" },
			`console.path: set but console.output is "stdout"`},
		{"a console max_size without output = file is a mistake", func(v *VM) { v.Console.MaxSize = Size(1 << 30) },
			`console.max_size: set but console.output is "stdout"`},
		{"a console max_size too small to hold a boot", func(v *VM) {
			v.Console = Console{Output: ConsoleFile, Path: "/var/log/demo.log", MaxSize: 4096}
		}, `console.max_size: 4KiB is less than the minimum 64KiB`},
		{"the console path is absolute", func(v *VM) { v.Console = Console{Output: ConsoleFile, Path: "demo.log"} },
			`console.path: "demo.log" is not an absolute path`},
		{"the agent socket is required", func(v *VM) { v.Agent.Socket = "" },
			`agent.socket: missing; set the absolute path of a unix socket`},
		{"the control socket is required", func(v *VM) { v.Control.Socket = "" },
			`control.socket: missing; set the absolute path of a unix socket`},
		{"a socket path is absolute", func(v *VM) { v.Control.Socket = "control.sock" },
			`control.socket: "control.sock" is not an absolute path`},
		{"a socket path fits sun_path (107 bytes)", func(v *VM) { v.Agent.Socket = "/" + strings.Repeat("a", MaxSocketPath) },
			`agent.socket: "/` + strings.Repeat("a", MaxSocketPath) + `" is 108 bytes long; a unix socket path has at most 107`},
		{"the two sockets are distinct", func(v *VM) { v.Control.Socket = v.Agent.Socket },
			`control.socket: /run/pmvm/demo/agent.sock is also agent.socket; every socket and file must have its own path`},
		{"a socket is not the console file", func(v *VM) {
			v.Console = Console{Output: ConsoleFile, Path: "/run/pmvm/demo/control.sock"}
		}, `control.socket: /run/pmvm/demo/control.sock is also console.path`},
		{"a socket is not a backing file", func(v *VM) { v.Agent.Socket = "/dev/shm/demo-ram1" },
			`agent.socket: /dev/shm/demo-ram1 is also memory[1].backing`},
	} {
		t.Run(tc.proves, func(t *testing.T) {
			v := validVM()
			tc.mutate(v)
			err := v.Validate()
			require.Error(t, err)
			errs := err.(interface{ Unwrap() []error }).Unwrap()
			require.Len(t, errs, 1, "exactly one problem expected, got:\n%v", err)
			require.True(t, strings.HasPrefix(err.Error(), tc.want), "got  %q\nwant %q...", err.Error(), tc.want)
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			require.True(t, strings.HasPrefix(tc.want, fe.Field+": "), "field %q", fe.Field)
		})
	}
}

// Validate reports every problem at once, in config order, so a user fixes
// a config in one pass.
func TestValidateReportsAllProblems(t *testing.T) {
	v := validVM()
	v.Name = ""
	v.VCPUs = 0
	v.Memory[1].Size = Size(3 * memspec.MiB)
	v.Control.Socket = "rel.sock"
	err := v.Validate()
	require.Error(t, err)
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		require.True(t, errors.As(e, &fe))
		fields = append(fields, fe.Field)
	}
	require.Equal(t, []string{"name", "vcpus", `memory[1] "ram1"`, "control.socket"}, fields)
}

// An empty document decodes (everything is optional to the decoder) and
// Validate lists every required field.
func TestValidateEmptyConfig(t *testing.T) {
	v, err := Decode("empty.toml", strings.NewReader(""))
	require.NoError(t, err)
	err = v.Validate()
	require.Error(t, err)
	for _, field := range []string{"name:", "vcpus:", "boot.kernel:", "memory:", "agent.socket:", "control.socket:"} {
		require.Contains(t, err.Error(), field)
	}
}

func TestTotalMemorySaturates(t *testing.T) {
	v := &VM{Memory: []Memory{{Size: Size(^uint64(0))}, {Size: 2}}}
	require.Equal(t, ^uint64(0), v.TotalMemory())
}
