package vmm

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/pmem/memspec"
	"github.com/pmvm/pmvm/state"
	"github.com/pmvm/pmvm/vmm/acpi"
	"github.com/pmvm/pmvm/vmm/devices"
	"github.com/pmvm/pmvm/vmm/x86"
)

// pureWiring wires device models to nothing: no KVM, no sockets.
func pureWiring() wiring {
	return wiring{
		log:     zerolog.Nop(),
		line:    func(uint32) devices.Line { return devices.NoLine{} },
		console: io.Discard,
		now:     time.Now,
		reset:   func(string) {},
		sleep:   func(uint8) {},
	}
}

// pureDevices builds the platform table's devices on a bus of their own,
// without KVM, and closes them when the test ends.
func pureDevices(t *testing.T) []platformDevice {
	t.Helper()
	var bus PortBus
	devs, err := buildPlatform(pureWiring(), &bus)
	t.Cleanup(func() {
		for _, d := range devs {
			if d.close != nil {
				d.close()
			}
		}
	})
	require.NoError(t, err)
	return devs
}

// device returns the model of the machine's device called name.
func (m *Machine) device(t *testing.T, name string) PortDevice {
	t.Helper()
	for _, d := range m.devs {
		if d.name() == name {
			return d.PortDevice
		}
	}
	t.Fatalf("the machine has no device %s", name)
	return nil
}

// isDeviceSection says whether a state section belongs to a device (not to
// the machine record, the clock, a memory block or a vCPU).
func isDeviceSection(name string) bool {
	return name != secMachine && name != secClock && !strings.HasPrefix(name, "memory/") && !strings.HasPrefix(name, "vcpu/")
}

// TestPlatformTableMatchesTheBus proves, without KVM, that the platform
// table and the port bus agree: every entry is on the bus under its
// topology name at its base port, with its port count; names are unique and
// spell the base port; the ranges do not overlap (checked pairwise here,
// not only by the bus); IRQs are the x86 layout's; only the entries that say
// why are stateless.
func TestPlatformTableMatchesTheBus(t *testing.T) {
	var bus PortBus
	devs, err := buildPlatform(pureWiring(), &bus)
	t.Cleanup(func() {
		for _, d := range devs {
			if d.close != nil {
				d.close()
			}
		}
	})
	require.NoError(t, err)
	require.Len(t, devs, len(platformTable))
	require.Len(t, bus.ranges, len(platformTable), "one bus range per table entry")

	seen := map[string]bool{}
	for i, e := range platformTable {
		name := e.name()
		assert.False(t, seen[name], "two entries are called %s", name)
		seen[name] = true
		assert.Equal(t, fmt.Sprintf("%s@0x%x", e.kind, e.base), name)
		r := bus.find(e.base)
		if assert.NotNil(t, r, "%s is not on the bus", name) {
			assert.Equal(t, name, r.name)
			assert.Equal(t, e.base, r.base)
			assert.Equal(t, e.ports, r.count)
		}
		for _, o := range platformTable[i+1:] {
			assert.False(t, e.base < o.base+o.ports && o.base < e.base+e.ports,
				"%s (%#x+%d) overlaps %s (%#x+%d)", name, e.base, e.ports, o.name(), o.base, o.ports)
		}
		if e.irq != noIRQ {
			assert.Less(t, e.irq, 24, "%s: GSI %d is not an IOAPIC input", name, e.irq)
		}
		assert.Equal(t, e.stateless == "", devs[i].state != nil, "%s: a device has a state section unless its entry says why not", name)
	}
	for _, r := range bus.ranges {
		assert.True(t, seen[r.name], "bus range %s is not a platform table entry", r.name)
	}
	want := map[string]struct {
		base uint16
		irq  int
	}{
		"uart@0x3f8":    {x86.COM1Port, x86.COM1IRQ},
		"uart@0x2f8":    {x86.COM2Port, x86.COM2IRQ},
		"cmos@0x70":     {x86.CMOSPort, x86.RTCIRQ},
		"i8042@0x60":    {x86.I8042Port, noIRQ},
		"acpi-pm@0x600": {x86.PMBlockPort, x86.SCIIRQ},
		"reset@0xcf9":   {x86.ResetPort, noIRQ},
	}
	require.Len(t, platformTable, len(want), "a new device: add it here and give it a round-trip test")
	for _, e := range platformTable {
		w, ok := want[e.name()]
		if assert.True(t, ok, "unexpected device %s", e.name()) {
			assert.Equal(t, w.base, e.base, e.name())
			assert.Equal(t, w.irq, e.irq, e.name())
		}
	}
}

// pureMachine is a machine with the platform's devices and everything a
// save reads, but no KVM: enough to write its state file.
func pureMachine(t *testing.T, cfg *configs.VM) *Machine {
	t.Helper()
	m := newMachine(cfg, zerolog.Nop())
	m.devs = pureDevices(t)
	for _, d := range m.devs {
		require.NoError(t, m.bus.Register(d.name(), d.base, d.ports, d))
	}
	tables, err := acpi.Build(m.acpiConfig(), x86.ACPITablesAddr)
	require.NoError(t, err)
	m.tables = tables
	m.ram, err = placeRAM(cfg, []uint64{2 * mib})
	require.NoError(t, err)
	return m
}

// TestEveryBusDeviceHasASectionAndEverySectionADevice proves, without KVM,
// on the state file a save writes: every device on the bus has a section
// named as on the bus (or its table entry says why it has none), and every
// device section names a device on the bus; the sections are in the table's
// order after the machine record and the clock.
func TestEveryBusDeviceHasASectionAndEverySectionADevice(t *testing.T) {
	cfg := &configs.VM{Name: "vm", VCPUs: 2, Mode: memspec.ModeReboot, Memory: []configs.Memory{{Name: "ram0", Size: 64 * mib}}}
	m := pureMachine(t, cfg)
	f, err := m.stateFile("test", 1, time.Now())
	require.NoError(t, err)
	checkSectionsMatchTheBus(t, f, &m.bus)

	var names []string
	for _, s := range f.Sections {
		names = append(names, s.Name)
	}
	assert.Equal(t, []string{"machine", "clock", "uart@0x3f8", "uart@0x2f8", "cmos@0x70", "i8042@0x60", "acpi-pm@0x600", "vcpu/0", "vcpu/1"}, names,
		"the order a save has always written (no memory sections: no backing is open here)")
}

// checkSectionsMatchTheBus asserts that f's device sections and the bus's
// stateful devices are the same set.
func checkSectionsMatchTheBus(t *testing.T, f *state.File, bus *PortBus) {
	t.Helper()
	stateless := map[string]string{}
	for _, e := range platformTable {
		stateless[e.name()] = e.stateless
	}
	for _, r := range bus.ranges {
		if why := stateless[r.name]; why != "" {
			_, ok := f.Section(r.name)
			assert.False(t, ok, "%s is stateless (%s) but has a section", r.name, why)
			continue
		}
		_, ok := f.Section(r.name)
		assert.True(t, ok, "device %s on the bus has no state section", r.name)
	}
	for _, s := range f.Sections {
		if !isDeviceSection(s.Name) {
			continue
		}
		r := bus.find(portOf(t, s.Name))
		if assert.NotNil(t, r, "section %s names no device on the bus", s.Name) {
			assert.Equal(t, s.Name, r.name, "section %s: the device at its port is another", s.Name)
		}
	}
}

// portOf reads the base port out of a topology name ("uart@0x3f8").
func portOf(t *testing.T, name string) uint16 {
	t.Helper()
	_, hex, ok := strings.Cut(name, "@0x")
	require.True(t, ok, "section %s is not named kind@0xPORT", name)
	var port uint16
	_, err := fmt.Sscanf(hex, "%x", &port)
	require.NoError(t, err, "section %s", name)
	return port
}

// TestDeviceSectionsRoundTripThroughTheTable proves, without KVM, that what
// each device saves comes back through restoreDevices into a fresh set of
// models, and that a missing or undecodable section is refused before any
// model changes.
func TestDeviceSectionsRoundTripThroughTheTable(t *testing.T) {
	src := pureDevices(t)
	// Give COM1 some programming so the round trip carries something.
	src[0].Write(1, []byte{0x05}) // IER
	src[0].Write(7, []byte{0xa5}) // SCR
	f := &state.File{}
	require.NoError(t, saveDevices(f, src))

	dst := pureDevices(t)
	require.NoError(t, restoreDevices(f, dst))
	for i := range src {
		if src[i].state == nil {
			continue
		}
		want, got := src[i].state.save(), dst[i].state.save()
		if src[i].kind == "acpi-pm" { // its timer runs on
			assert.Equal(t, fmt.Sprintf("%+v", withoutTimer(want)), fmt.Sprintf("%+v", withoutTimer(got)))
			continue
		}
		assert.Equal(t, want, got, src[i].name())
	}

	missing := &state.File{}
	for _, s := range f.Sections {
		if s.Name != "i8042@0x60" {
			require.NoError(t, missing.Add(s.Name, s.Version, s.Payload))
		}
	}
	fresh := pureDevices(t)
	before := fresh[0].state.save()
	assert.ErrorContains(t, restoreDevices(missing, fresh), `no section "i8042@0x60"`)
	assert.Equal(t, before, fresh[0].state.save(), "COM1 untouched by a refused restore")

	bad := &state.File{}
	for _, s := range f.Sections {
		p := s.Payload
		if s.Name == "acpi-pm@0x600" {
			p = []byte(`{"STS":"x"}`)
		}
		require.NoError(t, bad.Add(s.Name, s.Version, p))
	}
	assert.ErrorContains(t, restoreDevices(bad, fresh), `section "acpi-pm@0x600"`)
	assert.Equal(t, before, fresh[0].state.save(), "COM1 untouched by a refused restore")
}
