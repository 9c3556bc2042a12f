// Package vmm assembles a virtual machine from a config: guest memory,
// vCPUs, the in-kernel interrupt controllers and the device models, and
// runs it until the guest powers off or resets.
package vmm

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm/acpi"
	"github.com/pmvm/pmvm/vmm/devices"
	"github.com/pmvm/pmvm/vmm/devices/acpipm"
	"github.com/pmvm/pmvm/vmm/kvm"
	"github.com/pmvm/pmvm/vmm/x86"
)

// Options are the host-side choices that are not part of the machine.
type Options struct {
	Log zerolog.Logger
	// Console receives the guest's COM1 output.
	Console io.Writer
	// Agent carries COM2 (the guest agent line); nil leaves COM2 unconnected.
	Agent *SerialPort
	// Memory are the verdicts Preflight or CheckIncoming made on this
	// config's memory; nil: New probes the backings itself.
	Memory *pmem.Report
}

// Machine is one virtual machine. Create it with New, start the guest with
// Boot and Run, and release it with Close.
type Machine struct {
	cfg *configs.VM
	log zerolog.Logger

	// hw guards vm and vcpus against Close: it is held for reading by
	// whoever uses them from outside New and Close (interrupt lines raised
	// by device models and their host goroutines, kicks), and for writing
	// by Close, which leaves them nil. The vCPU threads hold it only
	// through those; Close runs after Run has returned.
	hw      sync.RWMutex
	sys     *kvm.System
	vm      *kvm.VM
	vcpus   []*kvm.VCPU
	regions []*pmem.Region
	ram     []x86.RAMRange
	mem     *GuestMemory
	bus     PortBus
	tables  *acpi.Image

	devs []platformDevice // the platform table's devices, in its order

	resets []vcpuReset // each vCPU's power-on state, restored at S3 wake

	// Guest-triggered log sites, each rate-limited (guestlog.go).
	guestLogs   guestLogs
	logSleepTyp *guestLog // a sleep type the machine does not offer
	logMMIO     *guestLog // MMIO to an unmapped address
	logAlarm    *guestLog // an RTC alarm that could not wake the guest
	logIRQ      *guestLog // an interrupt a device raised that KVM refused

	// onWake runs in its own goroutine after every wake from S3 (set before Run).
	onWake func(why string)

	mu       sync.Mutex // guards everything below
	cond     *sync.Cond // signalled on every runstate change and park
	runstate RunState
	since    time.Time     // when runstate was entered
	last     Transition    // the latest runstate change
	illegal  int           // runstate moves runstate.go does not allow
	changed  chan struct{} // closed and replaced on every runstate change
	parked   int           // vCPU threads parked (out of KVM_RUN) for S3
	wakeGen  uint64        // bumped by each wake; parked threads wait for it
	// wakeOnS3, when set, is why a suspend pmvm asked for was given up on:
	// an S3 entry then wakes the guest at once (WakeOnSuspend). Guarded by mu.
	wakeOnS3 string
	// restoredGens are the generations the restored state was saved at
	// (Restore), spent by SpendState.
	restoredGens []state.Generation
	outcome      Outcome
	stopErr      error
	started      time.Time
	stopping     chan struct{} // closed by stop

	// writeStateFile writes a state file durably (state.WriteFile; tests
	// wrap it to act while a save is in progress).
	writeStateFile func(path string, f *state.File) error
}

// RunState is where the machine is in its life.
type RunState string

const (
	StateCreated   RunState = "created"
	StateRunning   RunState = "running"
	StateSuspended RunState = "suspended" // the guest is in ACPI S3; vCPUs parked
	StateWaking    RunState = "waking"    // being reset to the waking vector
	StateSaving    RunState = "saving"    // suspended, its state being written
	StateSaved     RunState = "saved"     // suspended and saved; the process is about to exit
	StateStopping  RunState = "stopping"
	StateStopped   RunState = "stopped"
)

// Outcome is why Run returned.
type Outcome int

const (
	// OutcomePowerOff: the guest entered S5 (ACPI power off).
	OutcomePowerOff Outcome = iota
	// OutcomeReset: the guest asked for a reset (i8042, reset register, triple fault).
	OutcomeReset
	// OutcomeStopped: the host stopped the machine (a signal, the control socket).
	OutcomeStopped
	// OutcomeSaved: the suspended guest was saved to a state file.
	OutcomeSaved
	// OutcomeError: the machine failed; Run returns the error.
	OutcomeError
)

func (o Outcome) String() string {
	switch o {
	case OutcomePowerOff:
		return "poweroff"
	case OutcomeReset:
		return "reset"
	case OutcomeStopped:
		return "stopped"
	case OutcomeSaved:
		return "saved"
	default:
		return "error"
	}
}

// New builds the machine described by cfg: it maps guest memory, creates the
// VM, its irqchip, PIT and vCPUs, and wires the devices. Nothing runs yet.
func New(cfg *configs.VM, opt Options) (_ *Machine, err error) {
	m := newMachine(cfg, opt.Log)
	defer func() {
		if err != nil {
			m.Close() // release whatever was built before the failure
		}
	}()

	specs := MemorySpecs(cfg)
	// Refuse the whole VM, naming every block that cannot honour its mode,
	// before anything is mapped.
	rep, err := memoryVerdicts(specs, opt.Memory)
	if err != nil {
		return nil, err
	}
	// Each block's guest-physical address gets its backing's alignment
	// (probed, so the layout is known before anything is created or mapped).
	aligns := make([]uint64, len(rep.Blocks))
	for i, b := range rep.Blocks {
		aligns[i] = b.Align
	}
	if m.ram, err = placeRAM(cfg, aligns); err != nil {
		return nil, err
	}
	// KVM before any backing is opened: a host without it must not
	// have a backing file created or mapped for nothing.
	if m.sys, err = kvm.OpenSystem(); err != nil {
		return nil, err
	}
	for _, c := range []struct {
		cap  int
		name string
	}{{kvm.CapIRQChip, "KVM_CAP_IRQCHIP"}, {kvm.CapPIT2, "KVM_CAP_PIT2"}, {kvm.CapUserMemory, "KVM_CAP_USER_MEMORY"}, {kvm.CapExtCPUID, "KVM_CAP_EXT_CPUID"}, {kvm.CapImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"}} {
		if m.sys.CheckExtension(c.cap) == 0 {
			return nil, fmt.Errorf("this host's KVM lacks %s, which pmvm needs", c.name)
		}
	}
	for i, spec := range specs {
		r, err := pmem.Open(spec)
		if err != nil {
			return nil, err
		}
		m.regions = append(m.regions, r)
		if r.Align != aligns[i] {
			return nil, fmt.Errorf("memory block %q: its backing's alignment changed between the probe (%d bytes) and the mapping (%d bytes); start the VM again", spec.Name, aligns[i], r.Align)
		}
		ev := m.log.Info()
		if r.OptIn { // preserved_across_kexec: an explicit operator promise, logged loudly
			ev = m.log.Warn()
		}
		ev.Str("block", r.Name).Str("backing", spec.Backing).Str("kind", string(r.Kind)).Str("class", string(r.Class)).
			Uint64("size", r.Size).Uint64("align", r.Align).Strs("notes", r.Notes).Msg("memory mapped")
	}

	if m.vm, err = m.sys.CreateVM(); err != nil {
		return nil, err
	}
	if err = m.vm.SetTSSAddr(x86.TSSAddr); err != nil {
		return nil, err
	}
	if err = m.vm.SetIdentityMapAddr(x86.IdentityMapAddr); err != nil {
		return nil, err
	}
	if err = m.vm.CreateIRQChip(); err != nil {
		return nil, err
	}
	if err = m.vm.CreatePIT2(kvm.PITSpeakerDummy); err != nil {
		return nil, err
	}

	m.mem = &GuestMemory{ranges: m.ram}
	for slot, r := range m.ram {
		reg := m.regions[r.Block]
		host := reg.Mem[r.BlockOffset : r.BlockOffset+r.Size]
		if err = m.vm.SetUserMemoryRegion(uint32(slot), r.GuestPhys, r.Size, reg.Addr()+uintptr(r.BlockOffset)); err != nil {
			return nil, err
		}
		m.mem.host = append(m.mem.host, host)
		m.log.Debug().Int("slot", slot).Str("block", cfg.Memory[r.Block].Name).Str("gpa", fmt.Sprintf("%#x", r.GuestPhys)).Uint64("size", r.Size).Msg("memory slot")
	}

	if err = m.addDevices(opt); err != nil {
		return nil, err
	}

	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return nil, err
	}
	for id := 0; id < cfg.VCPUs; id++ {
		c, err := m.vm.CreateVCPU(id)
		if err != nil {
			return nil, err
		}
		m.vcpus = append(m.vcpus, c)
		leaves := x86.CPUID(supported, id, cfg.VCPUs)
		if err = c.SetCPUID(leaves); err != nil {
			return nil, err
		}
		if err = x86.SetBootXCR0(c, leaves); err != nil {
			return nil, err
		}
		if err = c.SetMSRs(x86.BootMSRs()); err != nil {
			return nil, err
		}
		l, err := c.LAPIC()
		if err != nil {
			return nil, err
		}
		if err = c.SetLAPIC(x86.WireLINTs(l)); err != nil {
			return nil, err
		}
		r, err := captureReset(c)
		if err != nil {
			return nil, err
		}
		m.resets = append(m.resets, r)
	}
	return m, nil
}

// MemorySpecs turns the config's memory blocks into backing specs, with the
// VM's mode so pmem can refuse what the mode cannot preserve.
func MemorySpecs(cfg *configs.VM) []pmem.Spec {
	specs := make([]pmem.Spec, len(cfg.Memory))
	for i, b := range cfg.Memory {
		specs[i] = pmem.Spec{Name: b.Name, Size: b.Size.Bytes(), Backing: b.Backing, Shared: b.Shared, Create: b.Create,
			Mode: cfg.RunMode(), PreservedAcrossKexec: b.PreservedAcrossKexec, VM: cfg.Name}
	}
	return specs
}

func newMachine(cfg *configs.VM, log zerolog.Logger) *Machine {
	m := &Machine{cfg: cfg, log: log, runstate: StateCreated, since: time.Now(),
		changed: make(chan struct{}), stopping: make(chan struct{}), writeStateFile: state.WriteFile}
	m.cond = sync.NewCond(&m.mu)
	m.logSleepTyp, m.logMMIO, m.logAlarm, m.logIRQ = m.guestLogs.site(), m.guestLogs.site(), m.guestLogs.site(), m.guestLogs.site()
	return m
}

// irqLine drives one input of the in-kernel irqchip.
type irqLine struct {
	m   *Machine
	gsi uint32
}

// SetLevel drives the line; once the machine is closed it does nothing (a
// host goroutine, such as the agent socket's, may still be feeding a device).
func (l irqLine) SetLevel(high bool) {
	l.m.hw.RLock()
	defer l.m.hw.RUnlock()
	if l.m.vm == nil {
		return
	}
	if err := l.m.vm.SetIRQLine(l.gsi, high); err != nil {
		l.m.logIRQ.event(l.m.log.Error()).Err(err).Uint32("gsi", l.gsi).Msg("interrupt lost")
	}
}

// kickAll gets every vCPU out of KVM_RUN (none once the machine is closed).
func (m *Machine) kickAll() {
	m.hw.RLock()
	defer m.hw.RUnlock()
	for _, c := range m.vcpus {
		c.Kick()
	}
}

// addDevices builds the platform table's devices, wired to this machine,
// and puts them on its port bus.
func (m *Machine) addDevices(opt Options) error {
	console := opt.Console
	if console == nil {
		console = io.Discard
	}
	devs, err := buildPlatform(wiring{
		log:     m.log,
		line:    func(gsi uint32) devices.Line { return irqLine{m, gsi} },
		console: console,
		agent:   opt.Agent,
		now:     time.Now,
		reset:   func(why string) { m.stop(OutcomeReset, nil, why) },
		sleep:   m.onSleep,
	}, &m.bus)
	m.devs = devs // Close releases what was built, even on an error
	return err
}

// onSleep is called when the guest writes SLP_EN to PM1a_CNT.
func (m *Machine) onSleep(typ uint8) {
	switch typ {
	case acpipm.SleepTypeS5:
		m.stop(OutcomePowerOff, nil, "guest entered S5")
	case acpipm.SleepTypeS3:
		m.enterS3()
	default:
		m.logSleepTyp.event(m.log.Warn()).Uint8("slp_typ", typ).Msg("guest asked for a sleep state this machine does not offer; ignored")
	}
}

func (m *Machine) acpiConfig() acpi.Config { return ACPIConfig(m.cfg.VCPUs) }

// ACPIConfig describes a machine with vcpus vCPUs to the ACPI table builder.
// The tables depend on nothing else, so a resume finds them where they were.
func ACPIConfig(vcpus int) acpi.Config {
	return acpi.Config{
		CPUs:            vcpus,
		LocalAPICAddr:   x86.LAPICAddr,
		IOAPICAddr:      x86.IOAPICAddr,
		IOAPICID:        uint8(vcpus),
		SCIIRQ:          x86.SCIIRQ,
		PM1aEventPort:   x86.PM1aEventPort,
		PM1aControlPort: x86.PM1aControlPort,
		PMTimerPort:     x86.PMTimerPort,
		SleepTypeS5:     acpipm.SleepTypeS5,
		SleepTypeS3:     acpipm.SleepTypeS3,
		EnableS3:        true,
		ResetPort:       x86.ResetPort,
		ResetValue:      x86.ResetValue,
	}
}

// Boot loads the kernel, initrd, command line and ACPI tables into guest
// memory and puts the boot vCPU at the 64-bit entry point. The other vCPUs
// wait for INIT/SIPI from the guest, as on a PC.
func (m *Machine) Boot() error {
	kernel, err := os.ReadFile(m.cfg.Boot.Kernel)
	if err != nil {
		return fmt.Errorf("read kernel: %w", err)
	}
	k, err := x86.ParseBzImage(kernel)
	if err != nil {
		return fmt.Errorf("%s: %w", m.cfg.Boot.Kernel, err)
	}
	var initrd []byte
	if m.cfg.Boot.Initrd != "" {
		if initrd, err = os.ReadFile(m.cfg.Boot.Initrd); err != nil {
			return fmt.Errorf("read initrd: %w", err)
		}
	}

	m.tables, err = acpi.Build(m.acpiConfig(), x86.ACPITablesAddr)
	if err != nil {
		return fmt.Errorf("build ACPI tables: %w", err)
	}
	// A cold boot depends on nothing in guest RAM it did not write: the
	// memory may hold what another guest left (persistent memory does).
	if err := x86.ClearFirstMiB(m.mem); err != nil {
		return err
	}
	if len(m.tables.Bytes) > x86.ACPITablesMax {
		return fmt.Errorf("ACPI tables are %d bytes, more than the %d reserved for them", len(m.tables.Bytes), x86.ACPITablesMax)
	}
	if _, err := m.mem.WriteAt(m.tables.Bytes, int64(m.tables.Base)); err != nil {
		return fmt.Errorf("write ACPI tables: %w", err)
	}
	if err := x86.WriteBootTables(m.mem); err != nil {
		return err
	}
	b, err := k.Load(m.mem, x86.BootSpec{Cmdline: m.cfg.Boot.Cmdline, Initrd: initrd, RAM: m.ram, RSDPAddr: m.tables.RSDP})
	if err != nil {
		return err
	}
	m.log.Info().Str("kernel", m.cfg.Boot.Kernel).Str("protocol", fmt.Sprintf("%d.%02d", k.Version>>8, k.Version&0xff)).
		Str("initrd_gpa", fmt.Sprintf("%#x", b.InitrdAddr)).Int("initrd_size", len(initrd)).Int("e820_entries", len(b.E820)).Msg("kernel loaded")

	bsp := m.vcpus[0]
	sregs, err := bsp.Sregs()
	if err != nil {
		return err
	}
	if err := bsp.SetSregs(x86.LongModeSregs(sregs)); err != nil {
		return err
	}
	if err := bsp.SetRegs(x86.LinuxEntryRegs(b)); err != nil {
		return err
	}
	return bsp.SetFPU(x86.InitialFPU())
}

// Close releases every resource the machine holds. The guest memory
// backings are unmapped, never modified. Host goroutines still feeding a
// device (the agent socket's client) reach neither the VM nor its vCPUs.
func (m *Machine) Close() error {
	for _, d := range m.devs {
		if d.close != nil {
			d.close()
		}
	}
	m.devs = nil
	m.hw.Lock()
	defer m.hw.Unlock()
	for _, c := range m.vcpus {
		c.Close()
	}
	m.vcpus = nil
	if m.vm != nil {
		m.vm.Close()
		m.vm = nil
	}
	if m.sys != nil {
		m.sys.Close()
		m.sys = nil
	}
	for _, r := range m.regions {
		r.Close()
	}
	m.regions = nil
	return nil
}
