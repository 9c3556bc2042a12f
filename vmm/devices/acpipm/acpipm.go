// Package acpipm models the ACPI fixed hardware a legacy (not
// hardware-reduced) FADT points at: the PM1a event block (status and
// enable), the PM1a control block and the PM timer, in one 12-port block:
//
//	offset 0-1   PM1a_STS   (FADT PM1a_EVT_BLK = base, PM1_EVT_LEN = 4)
//	offset 2-3   PM1a_EN
//	offset 4-5   PM1a_CNT   (PM1a_CNT_BLK = base+4, PM1_CNT_LEN = 2)
//	offset 6-7   nothing (reads 0xFF)
//	offset 8-11  PM_TMR     (PM_TMR_BLK = base+8, PM_TMR_LEN = 4)
//
// ACPI is always enabled: there is no SMI_CMD, SCI_EN reads 1 and cannot be
// cleared. Accesses of any width at any offset are decoded byte by byte, so
// 16-bit accesses to a 16-bit register, byte accesses and a 32-bit access
// over STS+EN all behave as the bytes they cover; a 32-bit timer read is
// sampled once.
//
// The SCI is level-triggered, active high: sci.SetLevel(true) while any
// status bit with an enable bit (TMR, GBL, PWRBTN, SLPBTN, RTC) is set in
// both STS and EN, false otherwise; called only when the level changes, with
// the PM lock held, so a Line must not call back into the PM block.
//
// A write with SLP_EN set calls onSleep(SLP_TYP) on the writing vCPU
// thread, outside the lock. The guest (ACPICA's acpi_hw_legacy_sleep) then
// spins reading PM1_STS until WAK_STS is set, so the VMM must stop that vCPU
// before it runs again: for S3, park every vCPU and, on wake, call
// SetWakeStatus; for S5, power off.
package acpipm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pmvm/pmvm/vmm/devices"
)

// PortCount is the size of the block in I/O ports.
const PortCount = 12

// Register offsets from the base port.
const (
	OffsetSTS = 0
	OffsetEN  = 2
	OffsetCNT = 4
	OffsetTMR = 8
)

// TimerHz is the PM timer's frequency.
const TimerHz = 3579545

// SLP_TYP values for the sleep states this machine offers. The DSDT's \_S3
// and \_S5 packages and the VMM's onSleep must use these.
const (
	SleepTypeS3 uint8 = 3
	SleepTypeS5 uint8 = 5
)

// PM1 status bits (write 1 to clear).
const (
	StsTMR    = 1 << 0  // the timer's top bit (23 or 31) changed
	StsBM     = 1 << 4  // bus master activity (never set)
	StsGBL    = 1 << 5  // global lock released by firmware (never set: there is none)
	StsPWRBTN = 1 << 8  // power button pressed (PressPowerButton)
	StsSLPBTN = 1 << 9  // sleep button pressed (PressSleepButton)
	StsRTC    = 1 << 10 // RTC alarm (RaiseRTC)
	StsWAK    = 1 << 15 // the machine woke from a sleep state (SetWakeStatus)
	stsMask   = StsTMR | StsBM | StsGBL | StsPWRBTN | StsSLPBTN | StsRTC | StsWAK
)

// PM1 enable bits; each enables the status bit at the same position.
const (
	EnTMR    = 1 << 0
	EnGBL    = 1 << 5
	EnPWRBTN = 1 << 8
	EnSLPBTN = 1 << 9
	EnRTC    = 1 << 10
	enMask   = EnTMR | EnGBL | EnPWRBTN | EnSLPBTN | EnRTC
)

// PM1 control bits.
const (
	CntSCIEN       = 1 << 0 // always reads 1
	CntBMRLD       = 1 << 1
	CntGBLRLS      = 1 << 2 // write-only, reads 0; no firmware to notify
	CntSLPTYPShift = 10
	CntSLPTYPMask  = 7 << CntSLPTYPShift
	CntSLPEN       = 1 << 13 // write-only, reads 0
	cntStoreMask   = CntBMRLD | CntSLPTYPMask
)

// Config chooses the block's variant.
type Config struct {
	// TimerExt32 makes PM_TMR a 32-bit counter; false makes it 24 bits
	// (the top byte reads 0). The FADT's TMR_VAL_EXT flag must agree.
	// The zero Config is the 24-bit variant; DefaultConfig is 32-bit.
	TimerExt32 bool
	// Now returns monotonic time since an arbitrary origin; nil uses the
	// host's monotonic clock. Tests inject a fake.
	Now func() time.Duration
}

// DefaultConfig is the variant pmvm's FADT describes: a 32-bit timer on the
// host's monotonic clock.
func DefaultConfig() Config { return Config{TimerExt32: true} }

// State is the block's guest-visible state.
type State struct {
	STS, EN uint16
	CNT     uint16 // BM_RLD and SLP_TYP only; SCI_EN is implied
	// Timer is PM_TMR's value when the state was taken; SetState makes the
	// counter continue from it (time while saved does not count).
	Timer      uint32
	TimerExt32 bool // must match the Config of the PM the state is loaded into
}

// PM is the PM1a event/control block and PM timer.
type PM struct {
	now     func() time.Duration
	bits    uint // timer width: 24 or 32
	sci     devices.Line
	onSleep func(slpTyp uint8)

	mu        sync.Mutex // guards every field below
	sts, en   uint16
	cnt       uint16 // cntStoreMask bits
	timerAdj  uint64 // counter = ticks(now) + timerAdj, truncated to bits
	tmrEpoch  uint64 // counter >> (bits-1) at the last look: a change sets TMR_STS
	sciHigh   bool   // the level last given to sci
	tmrTimer  *time.Timer
	tmrTimerG uint64 // generation: stale TMR_EN callbacks see a different value
	closed    bool
}

// New returns the block in its power-on state. sci (nil: not connected) is
// the SCI's interrupt line; onSleep (nil: ignored) is called when the guest
// writes SLP_EN.
func New(cfg Config, sci devices.Line, onSleep func(slpTyp uint8)) *PM {
	if sci == nil {
		sci = devices.NoLine{}
	}
	now := cfg.Now
	if now == nil {
		start := time.Now()
		now = func() time.Duration { return time.Since(start) }
	}
	p := &PM{now: now, bits: 24, sci: sci, onSleep: onSleep}
	if cfg.TimerExt32 {
		p.bits = 32
	}
	p.tmrEpoch = p.counterLocked() >> (p.bits - 1)
	return p
}

// Close stops the host timer that raises TMR_STS while TMR_EN is set.
func (p *PM) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.armTimerLocked()
}

// TimerExt32 reports whether PM_TMR is 32 bits wide (else 24).
func (p *PM) TimerExt32() bool { return p.bits == 32 }

// SCILevel reports the SCI line's level.
func (p *PM) SCILevel() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sciHigh
}

// PressPowerButton sets PWRBTN_STS; the SCI rises if PWRBTN_EN is set
// (Linux then runs its power-button handler: an orderly shutdown).
func (p *PM) PressPowerButton() { p.setStatus(StsPWRBTN) }

// PressSleepButton sets SLPBTN_STS; the SCI rises if SLPBTN_EN is set.
func (p *PM) PressSleepButton() { p.setStatus(StsSLPBTN) }

// RaiseRTC sets RTC_STS (an RTC alarm woke or would wake the machine); the
// SCI rises if RTC_EN is set.
func (p *PM) RaiseRTC() { p.setStatus(StsRTC) }

// SetWakeStatus sets WAK_STS, which the guest polls after writing SLP_EN
// and reads on resume. It has no enable bit and raises no SCI.
func (p *PM) SetWakeStatus() { p.setStatus(StsWAK) }

func (p *PM) setStatus(bit uint16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sts |= bit
	p.updateSCILocked()
}

// Reset returns the block to its power-on state (status, enables and
// control cleared, SCI low). The timer keeps counting.
func (p *PM) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sts, p.en, p.cnt = 0, 0, 0
	p.tmrEpoch = p.counterLocked() >> (p.bits - 1)
	p.updateSCILocked()
	p.armTimerLocked()
}

// ticks converts monotonic time to timer ticks without overflow.
func ticks(d time.Duration) uint64 {
	if d < 0 {
		d = 0
	}
	ns := uint64(d)
	return ns/1e9*TimerHz + ns%1e9*TimerHz/1e9
}

// counterLocked is the full-width (unmasked) counter.
func (p *PM) counterLocked() uint64 { return ticks(p.now()) + p.timerAdj }

func (p *PM) timerMask() uint64 { return 1<<p.bits - 1 }

// refreshTMRLocked sets TMR_STS if the timer's top bit changed since the
// last look, and updates the SCI.
func (p *PM) refreshTMRLocked() {
	if e := p.counterLocked() >> (p.bits - 1); e != p.tmrEpoch {
		p.tmrEpoch = e
		p.sts |= StsTMR
	}
	p.updateSCILocked()
}

func (p *PM) updateSCILocked() {
	high := p.sts&p.en&enMask != 0
	if high != p.sciHigh {
		p.sciHigh = high
		p.sci.SetLevel(high)
	}
}

// armTimerLocked (re)arms the host timer for the next top-bit change of the
// counter while TMR_EN is set, so the overflow SCI arrives without the guest
// polling. Linux never sets TMR_EN; this exists for completeness.
func (p *PM) armTimerLocked() {
	p.tmrTimerG++
	if p.tmrTimer != nil {
		p.tmrTimer.Stop()
		p.tmrTimer = nil
	}
	if p.closed || p.en&EnTMR == 0 {
		return
	}
	half := uint64(1) << (p.bits - 1)
	left := half - p.counterLocked()%half // ticks to the next top-bit change
	d := time.Duration((left*1e9 + TimerHz - 1) / TimerHz)
	gen := p.tmrTimerG
	p.tmrTimer = time.AfterFunc(d, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if gen != p.tmrTimerG {
			return
		}
		p.refreshTMRLocked()
		p.armTimerLocked()
	})
}

// regsLocked renders the 12-byte block.
func (p *PM) regsLocked() (r [PortCount]byte) {
	le := binary.LittleEndian
	le.PutUint16(r[OffsetSTS:], p.sts)
	le.PutUint16(r[OffsetEN:], p.en)
	le.PutUint16(r[OffsetCNT:], p.cnt|CntSCIEN)
	r[6], r[7] = 0xFF, 0xFF
	le.PutUint32(r[OffsetTMR:], uint32(p.counterLocked()&p.timerMask()))
	return r
}

// Read implements a guest port read: byte i comes from offset+i; bytes past
// the block read 0xFF.
func (p *PM) Read(offset uint16, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshTMRLocked()
	r := p.regsLocked()
	for i := range data {
		if o := int(offset) + i; o < PortCount {
			data[i] = r[o]
		} else {
			data[i] = 0xFF
		}
	}
}

// Write implements a guest port write: byte i goes to offset+i. Status
// bytes are write-1-to-clear, enable and control bytes are replaced (their
// unimplemented bits stay 0), the timer and the gap are read-only.
func (p *PM) Write(offset uint16, data []byte) {
	p.mu.Lock()
	p.refreshTMRLocked()
	sleep := false
	oldEN := p.en
	for i, b := range data {
		v := uint16(b)
		switch int(offset) + i {
		case OffsetSTS:
			p.sts &^= v & stsMask
		case OffsetSTS + 1:
			p.sts &^= v << 8 & stsMask
		case OffsetEN:
			p.en = (p.en&0xFF00 | v) & enMask
		case OffsetEN + 1:
			p.en = (p.en&0x00FF | v<<8) & enMask
		case OffsetCNT:
			p.cnt = (p.cnt&0xFF00 | v) & cntStoreMask
		case OffsetCNT + 1:
			p.cnt = (p.cnt&0x00FF | v<<8) & cntStoreMask
			sleep = sleep || v<<8&CntSLPEN != 0
		}
	}
	slpTyp := uint8(p.cnt & CntSLPTYPMask >> CntSLPTYPShift)
	p.updateSCILocked()
	if (oldEN^p.en)&EnTMR != 0 {
		p.armTimerLocked()
	}
	p.mu.Unlock()
	if sleep && p.onSleep != nil {
		p.onSleep(slpTyp)
	}
}

// State returns the block's state.
func (p *PM) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshTMRLocked()
	return State{
		STS: p.sts, EN: p.en, CNT: p.cnt,
		Timer:      uint32(p.counterLocked() & p.timerMask()),
		TimerExt32: p.bits == 32,
	}
}

// SetState replaces the block's state after checking it; on error nothing
// changes. The SCI is driven to the level s implies (even if unchanged) and
// the timer continues from s.Timer.
func (p *PM) SetState(s State) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.TimerExt32 != (p.bits == 32) {
		return fmt.Errorf("invalid ACPI PM state: saved with a %d-bit PM timer, this machine's is %d-bit (the FADT's TMR_VAL_EXT differs)", timerBits(s.TimerExt32), p.bits)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sts, p.en, p.cnt = s.STS, s.EN, s.CNT
	p.timerAdj = uint64(s.Timer) - ticks(p.now())
	p.tmrEpoch = p.counterLocked() >> (p.bits - 1)
	p.sciHigh = p.sts&p.en&enMask != 0
	p.sci.SetLevel(p.sciHigh)
	p.armTimerLocked()
	return nil
}

func timerBits(ext32 bool) int {
	if ext32 {
		return 32
	}
	return 24
}

// Validate reports why s is not a state the block can be in, or nil.
func (s State) Validate() error {
	var errs []error
	if s.STS&^stsMask != 0 {
		errs = append(errs, fmt.Errorf("PM1_STS %#04x has bits outside %#04x", s.STS, stsMask))
	}
	if s.EN&^enMask != 0 {
		errs = append(errs, fmt.Errorf("PM1_EN %#04x has bits outside %#04x", s.EN, enMask))
	}
	if s.CNT&^cntStoreMask != 0 {
		errs = append(errs, fmt.Errorf("PM1_CNT %#04x has bits outside %#04x (SCI_EN, GBL_RLS and SLP_EN are not stored)", s.CNT, cntStoreMask))
	}
	if !s.TimerExt32 && s.Timer>>24 != 0 {
		errs = append(errs, fmt.Errorf("PM timer %#x does not fit 24 bits", s.Timer))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid ACPI PM state: %w", errors.Join(errs...))
	}
	return nil
}
