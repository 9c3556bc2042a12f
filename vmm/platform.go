package vmm

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm/devices"
	"github.com/pmvm/pmvm/vmm/devices/acpipm"
	"github.com/pmvm/pmvm/vmm/devices/cmos"
	"github.com/pmvm/pmvm/vmm/devices/i8042"
	"github.com/pmvm/pmvm/vmm/devices/uart"
	"github.com/pmvm/pmvm/vmm/x86"
)

// platformTable is every device of the machine, each named once: its kind
// and I/O ports (which give its topology name, the bus name and its state
// section), its interrupt and how to build it. What a device does at a save,
// a restore, an S3 wake and a close is in the device its build returns.
// Adding a device is one entry here plus its model in vmm/devices.
var platformTable = []deviceEntry{
	{kind: "uart", base: x86.COM1Port, ports: x86.UARTPortCount, irq: x86.COM1IRQ, build: func(w wiring, irq devices.Line) device {
		u := uart.New(irq, w.console)
		return device{PortDevice: u, state: jsonState(u.State, u.SetState), wake: u.Reset}
	}},
	{kind: "uart", base: x86.COM2Port, ports: x86.UARTPortCount, irq: x86.COM2IRQ, build: func(w wiring, irq devices.Line) device {
		var out io.Writer = io.Discard
		if w.agent != nil {
			out = w.agent
		}
		u := uart.New(irq, out)
		d := device{PortDevice: u, state: jsonState(u.State, u.SetState), wake: u.Reset}
		if w.agent != nil {
			w.agent.attach(u, w.log) // the guest agent's line
			d.close = w.agent.detach
		}
		return d
	}},
	{kind: "cmos", base: x86.CMOSPort, ports: x86.CMOSPortCount, irq: x86.RTCIRQ, build: func(w wiring, irq devices.Line) device {
		c := cmos.New(w.now, irq)
		// Battery-backed: an S3 wake leaves the RTC and CMOS RAM as they were;
		// its alarm wakes a suspended guest.
		return device{PortDevice: c, state: jsonState(c.State, c.SetState), alarm: c.AlarmFired(), close: c.Close}
	}},
	{kind: "i8042", base: x86.I8042Port, ports: x86.I8042PortCount, irq: noIRQ, build: func(w wiring, _ devices.Line) device {
		k := i8042.New(func() { w.reset("i8042 reset") })
		return device{PortDevice: k, state: jsonState(k.State, k.SetState), wake: k.Reset}
	}},
	{kind: "acpi-pm", base: x86.PMBlockPort, ports: x86.PMBlockPortCount, irq: x86.SCIIRQ, build: func(w wiring, irq devices.Line) device {
		p := acpipm.New(acpipm.Config{TimerExt32: true}, irq, w.sleep)
		// Firmware resets the PM block at a wake and sets WAK_STS, which the
		// guest's resume path looks for.
		return device{PortDevice: p, state: jsonState(p.State, p.SetState), wake: func() { p.Reset(); p.SetWakeStatus() }, close: p.Close}
	}},
	{kind: "reset", base: x86.ResetPort, ports: 1, irq: noIRQ, stateless: "a write-only command register", build: func(w wiring, _ devices.Line) device {
		return device{PortDevice: resetPort{w.reset}}
	}},
}

// noIRQ marks a device that raises no interrupt.
const noIRQ = -1

// deviceEntry is one row of the platform table.
type deviceEntry struct {
	kind  string // the model: "uart", "cmos", ...
	base  uint16 // first I/O port
	ports uint16 // how many ports from base it claims
	irq   int    // the GSI it raises, or noIRQ
	// stateless says why the device has no state section ("" = it has one).
	stateless string
	build     func(w wiring, irq devices.Line) device
}

// name is the device's topology name: its bus name and its state section.
// It is derived from the base port so the two can never drift apart.
func (e deviceEntry) name() string { return fmt.Sprintf("%s@%#x", e.kind, e.base) }

// wiring is what device models need from the machine around them.
type wiring struct {
	log     zerolog.Logger
	line    func(gsi uint32) devices.Line // an input of the interrupt controller
	console io.Writer                     // COM1's output
	agent   *SerialPort                   // COM2's line; nil leaves it unconnected
	now     func() time.Time              // the RTC's host clock
	reset   func(why string)              // the guest asked for a machine reset
	sleep   func(slpTyp uint8)            // the guest wrote SLP_EN to PM1a_CNT
}

// device is a built device: the model on the bus and what the machine's
// lifecycle does to it. Nil funcs mean "nothing".
type device struct {
	PortDevice
	state deviceState     // nil: stateless (the entry says why)
	wake  func()          // at an S3 wake (devices that lose power in S3 reset)
	close func()          // at Machine.Close (timers, goroutines)
	alarm <-chan struct{} // fires when the device wakes a suspended guest
}

// deviceState saves a device into its section and reads it back.
type deviceState interface {
	save() any
	// decode reads a saved section; load applies it to the model. They are
	// apart so every section is checked before any model is touched.
	decode(s *state.Section) (load func() error, err error)
}

// jsonState is the state of a model whose record S is saved as JSON.
func jsonState[S any](get func() S, set func(S) error) deviceState {
	return jsonRecord[S]{get, set}
}

type jsonRecord[S any] struct {
	get func() S
	set func(S) error
}

func (j jsonRecord[S]) save() any { return j.get() }

func (j jsonRecord[S]) decode(s *state.Section) (func() error, error) {
	var v S
	if err := s.DecodeJSON(&v); err != nil {
		return nil, err
	}
	return func() error { return j.set(v) }, nil
}

// platformDevice is a table entry built into a device.
type platformDevice struct {
	deviceEntry
	device
}

// buildPlatform builds every device of the table and puts it on bus.
func buildPlatform(w wiring, bus *PortBus) ([]platformDevice, error) {
	out := make([]platformDevice, 0, len(platformTable))
	for _, e := range platformTable {
		var irq devices.Line = devices.NoLine{}
		if e.irq != noIRQ {
			irq = w.line(uint32(e.irq))
		}
		d := platformDevice{deviceEntry: e, device: e.build(w, irq)}
		if (d.state == nil) != (e.stateless != "") {
			return out, fmt.Errorf("platform table: device %s has state %t but its entry says stateless %q (a pmvm bug)", e.name(), d.state != nil, e.stateless)
		}
		out = append(out, d)
		if err := bus.Register(e.name(), e.base, e.ports, d); err != nil {
			return out, err
		}
	}
	return out, nil
}

// saveDevices adds each stateful device's section to f.
func saveDevices(f *state.File, devs []platformDevice) error {
	var errs []error
	for _, d := range devs {
		if d.state != nil {
			errs = append(errs, f.AddJSON(d.name(), recordVersion, d.state.save()))
		}
	}
	return errors.Join(errs...)
}

// restoreDevices loads every stateful device from its section of f: all
// sections are read and decoded first, so a missing or bad one leaves every
// model untouched.
func restoreDevices(f *state.File, devs []platformDevice) error {
	loads := make([]func() error, 0, len(devs))
	for _, d := range devs {
		if d.state == nil {
			continue
		}
		s, err := f.Need(d.name(), recordVersion)
		if err != nil {
			return err
		}
		load, err := d.state.decode(s)
		if err != nil {
			return err
		}
		loads = append(loads, load)
	}
	var errs []error
	for _, load := range loads {
		errs = append(errs, load())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("restore devices: %w", err)
	}
	return nil
}

// resetPort is the PCI reset control register at 0xcf9: writing a value with
// the reset bit (0x04) set resets the machine.
type resetPort struct{ reset func(why string) }

func (r resetPort) Read(_ uint16, data []byte) {
	for i := range data {
		data[i] = 0
	}
}

func (r resetPort) Write(_ uint16, data []byte) {
	if len(data) > 0 && data[0]&0x04 != 0 {
		r.reset("reset register 0xcf9")
	}
}
