package acpi

import (
	"errors"
	"fmt"
)

// Config describes the machine the tables describe. Every port is an x86 I/O
// port; the VMM must implement the registers behind them as the package
// documentation says.
type Config struct {
	CPUs          int    // number of vCPUs, APIC ids and ACPI processor UIDs 0..CPUs-1
	LocalAPICAddr uint32 // local APIC MMIO base, normally 0xFEE00000
	IOAPICAddr    uint32 // I/O APIC MMIO base, normally 0xFEC00000
	IOAPICID      uint8  // I/O APIC id, must not be one of the local APIC ids (e.g. CPUs)
	SCIIRQ        uint16 // ISA IRQ (= GSI, = I/O APIC pin) of the SCI, normally 9; level, active high

	PM1aEventPort   uint16 // PM1a_EVT_BLK: 4 bytes, PM1 status (16 bits) then PM1 enable (16 bits)
	PM1aControlPort uint16 // PM1a_CNT_BLK: 2 bytes, PM1 control
	PMTimerPort     uint16 // PM_TMR_BLK: 4 bytes, 32-bit 3.579545 MHz counter; 0 = no PM timer

	SleepTypeS5 uint8 // SLP_TYP value (0-7) the guest writes to PM1 control to power off
	SleepTypeS3 uint8 // SLP_TYP value (0-7) for suspend to RAM, used when EnableS3
	EnableS3    bool  // declare \_S3 in the DSDT

	ResetPort  uint16 // FADT RESET_REG as a system I/O port (e.g. 0xCF9 or 0x64); 0 = no reset register
	ResetValue uint8  // value to write to ResetPort (e.g. 0x06 for 0xCF9, 0xFE for 0x64)

	// PowerButton declares a fixed-feature power button (FADT PWR_BUTTON flag
	// clear): Linux then enables PWRBTN_EN (PM1 enable bit 8), and the VMM can
	// request an orderly shutdown by setting PWRBTN_STS (PM1 status bit 8) and
	// raising the SCI. When false, the FADT says there is no power button.
	PowerButton bool
}

// DefaultConfig returns the conventional machine for cpus vCPUs: local APIC
// and I/O APIC at their usual addresses, I/O APIC id = cpus, SCI on IRQ 9, the
// PM block at 0x600 (event 0x600-0x603, control 0x604-0x605, timer
// 0x608-0x60B, as on QEMU's PIIX4 and ICH9), SLP_TYP values of Intel
// chipsets (S3 = 5, S5 = 7), S3 enabled, reset through port 0xCF9 with 0x06.
func DefaultConfig(cpus int) Config {
	return Config{
		CPUs:            cpus,
		LocalAPICAddr:   0xFEE00000,
		IOAPICAddr:      0xFEC00000,
		IOAPICID:        uint8(cpus),
		SCIIRQ:          9,
		PM1aEventPort:   0x600,
		PM1aControlPort: 0x604,
		PMTimerPort:     0x608,
		SleepTypeS5:     7,
		SleepTypeS3:     5,
		EnableS3:        true,
		ResetPort:       0xCF9,
		ResetValue:      0x06,
	}
}

// Legacy devices the DSDT declares, with the I/O ports and ISA IRQs it gives
// them. The VMM must put its device models exactly there.
const (
	COM1Port    = 0x3F8 // 8 ports, IRQ 4
	COM1IRQ     = 4
	COM2Port    = 0x2F8 // 8 ports, IRQ 3
	COM2IRQ     = 3
	RTCPort     = 0x70 // index 0x70, data 0x71, IRQ 8
	RTCIRQ      = 8
	I8042Data   = 0x60 // data port
	I8042Cmd    = 0x64 // command/status port
	I8042IRQ    = 1
	RTCCentury  = 0x32 // CMOS index of the BCD century byte (FADT CENTURY)
	MaxCPUs     = 254  // APIC ids 0..253; 0xFF is the broadcast id
	MaxSleepTyp = 7    // SLP_TYP is a 3-bit field
)

type portRange struct {
	name       string
	start, len uint32
}

// Validate reports every problem with c, joined, or nil.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.CPUs < 1 || c.CPUs > MaxCPUs {
		bad("CPUs = %d: must be 1 to %d (one xAPIC id per vCPU, 0xFF is the broadcast id)", c.CPUs, MaxCPUs)
	}
	if c.LocalAPICAddr == 0 {
		bad("LocalAPICAddr is 0: set the local APIC base (normally 0xFEE00000)")
	}
	if c.IOAPICAddr == 0 {
		bad("IOAPICAddr is 0: set the I/O APIC base (normally 0xFEC00000)")
	}
	if c.IOAPICID == 0xFF {
		bad("IOAPICID = 0xFF: the broadcast id cannot name an I/O APIC")
	} else if c.CPUs >= 1 && int(c.IOAPICID) < c.CPUs {
		bad("IOAPICID = %d collides with the local APIC id of vCPU %d (vCPUs use ids 0..%d); use %d or above",
			c.IOAPICID, c.IOAPICID, c.CPUs-1, c.CPUs)
	}
	switch c.SCIIRQ {
	case 0, 2:
		bad("SCIIRQ = %d: IRQ %d is reserved (timer / PIC cascade); use 9", c.SCIIRQ, c.SCIIRQ)
	case COM1IRQ, COM2IRQ, RTCIRQ, I8042IRQ:
		bad("SCIIRQ = %d is taken by a legacy device (COM1 4, COM2 3, RTC 8, i8042 1); use 9", c.SCIIRQ)
	default:
		if c.SCIIRQ > 15 {
			bad("SCIIRQ = %d: must be an ISA IRQ (1-15, normally 9) so the MADT override can name it", c.SCIIRQ)
		}
	}
	if c.PM1aEventPort == 0 {
		bad("PM1aEventPort is 0: a legacy (not hardware-reduced) FADT needs a PM1a event block")
	}
	if c.PM1aControlPort == 0 {
		bad("PM1aControlPort is 0: a legacy (not hardware-reduced) FADT needs a PM1a control block")
	}
	if c.SleepTypeS5 > MaxSleepTyp {
		bad("SleepTypeS5 = %d: SLP_TYP is 3 bits, must be 0 to 7", c.SleepTypeS5)
	}
	if c.SleepTypeS3 > MaxSleepTyp {
		bad("SleepTypeS3 = %d: SLP_TYP is 3 bits, must be 0 to 7", c.SleepTypeS3)
	}
	if c.EnableS3 && c.SleepTypeS3 == c.SleepTypeS5 {
		bad("SleepTypeS3 and SleepTypeS5 are both %d: the VMM could not tell suspend from power-off", c.SleepTypeS3)
	}

	// I/O ranges must fit in the 64 KiB port space and not overlap each other
	// or the legacy devices. (The reset register may share a port on purpose,
	// e.g. 0x64 with 0xFE pulses the i8042 reset line, so it is not checked.)
	ranges := []portRange{
		{"COM1", COM1Port, 8}, {"COM2", COM2Port, 8}, {"RTC", RTCPort, 2},
		{"i8042 data", I8042Data, 1}, {"i8042 command", I8042Cmd, 1},
	}
	if c.PM1aEventPort != 0 {
		ranges = append(ranges, portRange{"PM1aEventPort", uint32(c.PM1aEventPort), pm1EvtLen})
	}
	if c.PM1aControlPort != 0 {
		ranges = append(ranges, portRange{"PM1aControlPort", uint32(c.PM1aControlPort), pm1CntLen})
	}
	if c.PMTimerPort != 0 {
		ranges = append(ranges, portRange{"PMTimerPort", uint32(c.PMTimerPort), pmTmrLen})
	}
	for i, a := range ranges {
		if a.start+a.len > 0x10000 {
			bad("%s 0x%X..0x%X runs past the last I/O port 0xFFFF", a.name, a.start, a.start+a.len-1)
		}
		for _, b := range ranges[:i] {
			if a.start < b.start+b.len && b.start < a.start+a.len {
				bad("%s 0x%X..0x%X overlaps %s 0x%X..0x%X", a.name, a.start, a.start+a.len-1,
					b.name, b.start, b.start+b.len-1)
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("acpi: invalid config: %w", errors.Join(errs...))
}
