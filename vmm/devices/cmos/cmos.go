// Package cmos models the PC's MC146818 real-time clock and its 128 bytes
// of CMOS RAM behind ports 0x70 (index) and 0x71 (data).
//
// The clock is never stored: time registers are computed from the host
// clock at every read, as guest time = now().UTC() + offset. A guest that
// sets the clock only moves the offset; the host clock is never touched.
// Register A's update-in-progress bit always reads 0 (an update here takes
// no time), so Linux's mc146818_get_time never waits on it.
//
// Interrupts: the update-ended (UIE/UF) and alarm (AIE/AF) interrupts are
// produced by one host timer (time.AfterFunc) armed for the next event and
// re-armed on every register write that may move it; Close stops it. Their
// flags are set only while the matching enable bit is set (the interrupt is
// their only use here). The periodic interrupt (PIE/PF) is not generated:
// Linux emulates periodic RTC interrupts with hrtimers and never needs it.
// Day-of-month and month alarms do not exist (leave the FADT's DAY_ALRM and
// MON_ALRM 0); alarms repeat daily, with the usual "don't care" values
// 0xC0-0xFF in the alarm registers.
//
// The IRQ 8 output is a level that follows register C's IRQF: raised when
// an enabled flag is set, lowered when the guest reads C (which clears it).
// On the ISA edge-triggered input the rising edge is the interrupt. SetLevel
// is called with the CMOS lock held: a Line must not call back into the
// CMOS. Alarms are also reported on AlarmFired, outside the lock.
package cmos

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pmvm/pmvm/vmm/devices"
)

// PortCount is the number of I/O ports (0x70, 0x71) the CMOS decodes.
const PortCount = 2

// Port offsets.
const (
	OffsetIndex = 0 // write-only index register; bit 7 disables NMI
	OffsetData  = 1
)

// RAMSize is the number of CMOS bytes, registers included.
const RAMSize = 128

// Register indexes.
const (
	RegSeconds      = 0x00
	RegSecondsAlarm = 0x01
	RegMinutes      = 0x02
	RegMinutesAlarm = 0x03
	RegHours        = 0x04
	RegHoursAlarm   = 0x05
	RegDayOfWeek    = 0x06 // 1 = Sunday
	RegDayOfMonth   = 0x07
	RegMonth        = 0x08
	RegYear         = 0x09 // year within the century
	RegA            = 0x0A
	RegB            = 0x0B
	RegC            = 0x0C
	RegD            = 0x0D
	RegCentury      = 0x32 // the FADT's CENTURY field must name this index
)

// Register A, B, C and D bits.
const (
	AUIP = 0x80 // update in progress: always reads 0

	BSET  = 0x80 // updates inhibited; guest is setting the clock
	BPIE  = 0x40 // periodic interrupt enable (stored, never fires)
	BAIE  = 0x20 // alarm interrupt enable
	BUIE  = 0x10 // update-ended interrupt enable
	BSQWE = 0x08 // square wave enable (stored)
	BDM   = 0x04 // data mode: 1 binary, 0 BCD
	B24H  = 0x02 // 1: 24-hour, 0: 12-hour with bit 7 of hours = PM
	BDSE  = 0x01 // daylight saving enable (stored, ignored)

	CIRQF = 0x80 // an enabled flag below is set
	CPF   = 0x40 // periodic (never set)
	CAF   = 0x20 // alarm
	CUF   = 0x10 // update ended
	cMask = CPF | CAF | CUF

	DVRT = 0x80 // valid RAM and time: the battery is good
)

// Power-on values of registers A and B: 32.768 kHz time base, 1024 Hz rate,
// BCD, 24-hour mode (what a PC BIOS leaves).
const (
	defaultA = 0x26
	defaultB = B24H
)

// alarmDontCare: an alarm register with both top bits set matches any value.
const alarmDontCare = 0xC0

// State is everything the guest can observe besides the host clock.
type State struct {
	Index       uint8 // selected register, 0-0x7F
	NMIDisabled bool  // bit 7 of the last index write
	// RAM is the 128 bytes, registers A-C included (D is not stored: it
	// is always 0x80). Time registers 0x00-0x09 and 0x32 hold the values
	// latched when the guest set SET, or its writes since; with SET clear
	// they are not used (reads are live).
	RAM [RAMSize]byte
	// Offset is guest time minus host time (both UTC). Guest writes that
	// would need more than about ±292 years saturate.
	Offset time.Duration
}

// CMOS is the RTC and CMOS RAM. Create it with New; Close it to stop its
// timer.
type CMOS struct {
	now   func() time.Time
	irq   devices.Line
	alarm chan struct{} // capacity 1; see AlarmFired

	mu          sync.Mutex // guards every field below
	index       uint8
	nmiDisabled bool
	ram         [RAMSize]byte
	offset      time.Duration
	lineHigh    bool        // the level last given to irq
	timer       *time.Timer // the armed event timer, or nil
	timerGen    uint64      // incremented on every re-arm; stale callbacks see a different value
	target      time.Time   // guest time the timer is armed for
	targetUF    bool        // at target, an update ends (UIE)
	targetAF    bool        // at target, the alarm matches (AIE)
	closed      bool
}

// New returns a CMOS in its power-on state whose clock reads now (nil means
// time.Now) and whose interrupt output drives irq (nil: not connected).
func New(now func() time.Time, irq devices.Line) *CMOS {
	if now == nil {
		now = time.Now
	}
	if irq == nil {
		irq = devices.NoLine{}
	}
	c := &CMOS{now: now, irq: irq, alarm: make(chan struct{}, 1)}
	c.ram[RegA] = defaultA
	c.ram[RegB] = defaultB
	return c
}

// Close stops the event timer. The CMOS stays usable by the guest, but no
// alarm or update interrupt fires afterwards.
func (c *CMOS) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.rearmLocked()
}

// AlarmFired returns a channel that receives a value (buffer of one,
// signals coalesce) each time the alarm matches with AIE set, after AF and
// IRQF are set and the line raised. The VMM can use it to wake a suspended
// guest.
func (c *CMOS) AlarmFired() <-chan struct{} { return c.alarm }

// AlarmPending reports whether register C's AF flag is set: an alarm fired
// and the guest has not read register C since.
func (c *CMOS) AlarmPending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ram[RegC]&CAF != 0
}

// Reset does what the chip's RESET pin does: clears the interrupt enables
// (PIE, AIE, UIE, SQWE) and the flags, lowering IRQ 8. Time, RAM and the
// index survive, as they do on a PC.
func (c *CMOS) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ram[RegB] &^= BPIE | BAIE | BUIE | BSQWE
	c.ram[RegC] = 0
	c.updateIRQLocked()
	c.rearmLocked()
}

// Read implements a guest port read. Each byte is a separate access to
// offset+i (ISA splits wide accesses). The index port is write-only and
// reads 0xFF, as do offsets past 1.
func (c *CMOS) Read(offset uint16, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		if int(offset)+i == OffsetData {
			data[i] = c.readRegLocked(c.index)
		} else {
			data[i] = 0xFF
		}
	}
}

// Write implements a guest port write; see Read.
func (c *CMOS) Write(offset uint16, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, b := range data {
		switch int(offset) + i {
		case OffsetIndex:
			c.index = b & 0x7F
			c.nmiDisabled = b&0x80 != 0
		case OffsetData:
			c.writeRegLocked(c.index, b)
		}
	}
}

func isTimeReg(r uint8) bool {
	switch r {
	case RegSeconds, RegMinutes, RegHours, RegDayOfWeek, RegDayOfMonth, RegMonth, RegYear, RegCentury:
		return true
	}
	return false
}

func (c *CMOS) readRegLocked(r uint8) uint8 {
	switch {
	case isTimeReg(r):
		if c.ram[RegB]&BSET != 0 {
			return c.ram[r]
		}
		return c.timeRegs(c.guestNowLocked())[r]
	case r == RegA:
		return c.ram[RegA] &^ AUIP
	case r == RegC:
		v := c.ram[RegC]
		c.ram[RegC] = 0
		c.updateIRQLocked()
		return v
	case r == RegD:
		return DVRT
	default:
		return c.ram[r]
	}
}

func (c *CMOS) writeRegLocked(r uint8, v uint8) {
	switch {
	case isTimeReg(r):
		set := c.ram[RegB]&BSET != 0
		if !set {
			c.latchLocked()
		}
		c.ram[r] = v
		if !set {
			c.commitLocked()
		}
		c.rearmLocked()
	case r == RegSecondsAlarm, r == RegMinutesAlarm, r == RegHoursAlarm:
		c.ram[r] = v
		c.rearmLocked()
	case r == RegA:
		c.ram[RegA] = v &^ AUIP
	case r == RegB:
		old := c.ram[RegB]
		if v&BSET != 0 {
			if old&BSET == 0 {
				c.latchLocked()
			}
			v &^= BUIE // setting SET clears UIE
		}
		c.ram[RegB] = v
		if old&BSET != 0 && v&BSET == 0 {
			c.commitLocked()
		}
		c.updateIRQLocked()
		c.rearmLocked()
	case r == RegC, r == RegD:
		// read-only
	default:
		c.ram[r] = v
	}
}

func (c *CMOS) guestNowLocked() time.Time {
	return c.now().UTC().Add(c.offset)
}

// latchLocked copies the current guest time into the time registers.
func (c *CMOS) latchLocked() {
	regs := c.timeRegs(c.guestNowLocked())
	for r := range regs {
		if isTimeReg(uint8(r)) {
			c.ram[r] = regs[r]
		}
	}
}

// commitLocked makes the time in the time registers the guest time, now:
// the new second starts at this instant. The day of week is not used.
func (c *CMOS) commitLocked() {
	b := c.ram[RegB]
	year := c.decode(c.ram[RegCentury])*100 + c.decode(c.ram[RegYear])
	t := time.Date(year, time.Month(c.decode(c.ram[RegMonth])), c.decode(c.ram[RegDayOfMonth]),
		decodeHours(c.ram[RegHours], b), c.decode(c.ram[RegMinutes]), c.decode(c.ram[RegSeconds]), 0, time.UTC)
	c.offset = t.Sub(c.now().UTC())
}

// timeRegs encodes guest time g as the register file would show it (only
// the time register indexes are filled).
func (c *CMOS) timeRegs(g time.Time) (regs [RAMSize]byte) {
	b := c.ram[RegB]
	y := g.Year()
	regs[RegSeconds] = encode(g.Second(), b)
	regs[RegMinutes] = encode(g.Minute(), b)
	regs[RegHours] = encodeHours(g.Hour(), b)
	regs[RegDayOfWeek] = encode(int(g.Weekday())+1, b)
	regs[RegDayOfMonth] = encode(g.Day(), b)
	regs[RegMonth] = encode(int(g.Month()), b)
	regs[RegYear] = encode(mod(y, 100), b)
	regs[RegCentury] = encode(mod(y/100, 100), b)
	return regs
}

func mod(a, m int) int { return (a%m + m) % m }

// encode renders n (0-99) in BCD or binary according to register B.
func encode(n int, b uint8) uint8 {
	if b&BDM != 0 {
		return uint8(n)
	}
	return uint8(n/10<<4 | n%10)
}

// decode reads a register value in the current data mode. Invalid BCD
// digits decode to out-of-range numbers, never a panic.
func (c *CMOS) decode(v uint8) int { return decodeMode(v, c.ram[RegB]) }

func decodeMode(v uint8, b uint8) int {
	if b&BDM != 0 {
		return int(v)
	}
	return int(v>>4)*10 + int(v&0x0F)
}

func encodeHours(h int, b uint8) uint8 {
	if b&B24H != 0 {
		return encode(h, b)
	}
	h12 := h % 12
	if h12 == 0 {
		h12 = 12
	}
	v := encode(h12, b)
	if h >= 12 {
		v |= 0x80
	}
	return v
}

func decodeHours(v uint8, b uint8) int {
	if b&B24H != 0 {
		return decodeMode(v, b)
	}
	h := decodeMode(v&0x7F, b)
	if h == 12 {
		h = 0
	}
	if v&0x80 != 0 {
		h += 12
	}
	return h
}

// updateIRQLocked recomputes IRQF from the flags and enables and drives
// the line when its level changes.
func (c *CMOS) updateIRQLocked() {
	flags := c.ram[RegC] & cMask
	if flags&c.ram[RegB]&(BPIE|BAIE|BUIE) != 0 { // C's flag bits line up with B's enables
		flags |= CIRQF
	}
	c.ram[RegC] = flags
	high := flags&CIRQF != 0
	if high != c.lineHigh {
		c.lineHigh = high
		c.irq.SetLevel(high)
	}
}

// rearmLocked stops the event timer and, unless closed or SET is held,
// arms it for the next update end (UIE) or alarm match (AIE).
func (c *CMOS) rearmLocked() {
	c.timerGen++
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	b := c.ram[RegB]
	if c.closed || b&BSET != 0 || b&(BAIE|BUIE) == 0 {
		return
	}
	g := c.guestNowLocked()
	next := g.Truncate(time.Second).Add(time.Second)
	var target time.Time
	var uf, af bool
	if b&BUIE != 0 {
		target, uf = next, true
	}
	if b&BAIE != 0 {
		if t, ok := nextAlarm(next, c.alarmSpec()); ok {
			switch {
			case !uf || t.Before(target):
				target, uf, af = t, false, true
			case t.Equal(target):
				af = true
			}
		}
	}
	if !uf && !af {
		return // the alarm can never match
	}
	c.target, c.targetUF, c.targetAF = target, uf, af
	gen := c.timerGen
	c.timer = time.AfterFunc(target.Sub(g), func() { c.fire(gen) })
}

// fire runs on the timer's goroutine.
func (c *CMOS) fire(gen uint64) {
	c.mu.Lock()
	if gen != c.timerGen || c.closed {
		c.mu.Unlock()
		return
	}
	alarmed := false
	if !c.guestNowLocked().Before(c.target) {
		if c.targetUF {
			c.ram[RegC] |= CUF
		}
		if c.targetAF {
			c.ram[RegC] |= CAF
			alarmed = true
		}
		c.updateIRQLocked()
	}
	// Early (the host clock was stepped back) or done: arm for what is next.
	c.rearmLocked()
	c.mu.Unlock()
	if alarmed {
		select {
		case c.alarm <- struct{}{}:
		default:
		}
	}
}

// alarmSpec is the decoded alarm: -1 for "don't care", else the value
// (possibly out of range, then it never matches).
type alarmSpec struct{ hour, min, sec int }

func (c *CMOS) alarmSpec() alarmSpec {
	b := c.ram[RegB]
	field := func(v uint8, hours bool) int {
		switch {
		case v&alarmDontCare == alarmDontCare:
			return -1
		case hours:
			return decodeHours(v, b)
		default:
			return decodeMode(v, b)
		}
	}
	return alarmSpec{
		hour: field(c.ram[RegHoursAlarm], true),
		min:  field(c.ram[RegMinutesAlarm], false),
		sec:  field(c.ram[RegSecondsAlarm], false),
	}
}

// nextAlarm returns the first whole second at or after from (itself on a
// second boundary) whose time of day matches s. Alarms repeat daily, so
// today and tomorrow suffice; whole hours and minutes before from are
// skipped, bounding the work to a few thousand steps.
func nextAlarm(from time.Time, s alarmSpec) (time.Time, bool) {
	match := func(spec, v int) bool { return spec < 0 || spec == v }
	y, mo, d := from.Date()
	for day := 0; day < 2; day++ {
		d0 := time.Date(y, mo, d+day, 0, 0, 0, 0, time.UTC)
		for h := 0; h < 24; h++ {
			hs := d0.Add(time.Duration(h) * time.Hour)
			if !match(s.hour, h) || !hs.Add(time.Hour).After(from) {
				continue
			}
			for m := 0; m < 60; m++ {
				ms := hs.Add(time.Duration(m) * time.Minute)
				if !match(s.min, m) || !ms.Add(time.Minute).After(from) {
					continue
				}
				for sec := 0; sec < 60; sec++ {
					t := ms.Add(time.Duration(sec) * time.Second)
					if match(s.sec, sec) && !t.Before(from) {
						return t, true
					}
				}
			}
		}
	}
	return time.Time{}, false
}

// State returns a copy of the CMOS state.
func (c *CMOS) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return State{Index: c.index, NMIDisabled: c.nmiDisabled, RAM: c.ram, Offset: c.offset}
}

// SetState replaces the CMOS state with s after checking it; on error
// nothing changes. The IRQ line is driven to the level s implies and the
// event timer re-armed.
func (c *CMOS) SetState(s State) error {
	if err := s.Validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index, c.nmiDisabled, c.ram, c.offset = s.Index, s.NMIDisabled, s.RAM, s.Offset
	c.lineHigh = c.ram[RegC]&CIRQF != 0
	c.irq.SetLevel(c.lineHigh)
	c.rearmLocked()
	return nil
}

// Validate reports why s is not a state the CMOS can be in, or nil.
func (s State) Validate() error {
	var errs []error
	if s.Index > 0x7F {
		errs = append(errs, fmt.Errorf("index %#02x is above 0x7F (bit 7 is NMIDisabled)", s.Index))
	}
	if s.RAM[RegA]&AUIP != 0 {
		errs = append(errs, fmt.Errorf("register A %#02x has UIP set", s.RAM[RegA]))
	}
	cr := s.RAM[RegC]
	if cr&^(cMask|CIRQF) != 0 {
		errs = append(errs, fmt.Errorf("register C %#02x has bits 0-3 set", cr))
	}
	if want := cr&cMask&s.RAM[RegB]&(BPIE|BAIE|BUIE) != 0; (cr&CIRQF != 0) != want {
		errs = append(errs, fmt.Errorf("register C %#02x: IRQF must be set exactly when an enabled flag is (register B %#02x)", cr, s.RAM[RegB]))
	}
	if s.RAM[RegB]&BSET != 0 && s.RAM[RegB]&BUIE != 0 {
		errs = append(errs, fmt.Errorf("register B %#02x: UIE cannot be set while SET is", s.RAM[RegB]))
	}
	if s.RAM[RegD] != 0 {
		errs = append(errs, fmt.Errorf("RAM[0x0D] = %#02x: register D is not stored, must be 0", s.RAM[RegD]))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid CMOS state: %w", errors.Join(errs...))
	}
	return nil
}
