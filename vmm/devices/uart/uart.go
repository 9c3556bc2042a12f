// Package uart models a 16550A UART (the PC's COM1/COM2) as a pure device:
// eight byte-wide registers, a receive FIFO fed by the host, a transmitter
// that hands every byte to an io.Writer at once, and one interrupt output.
//
// The semantics follow rust-vmm's vm-superio and QEMU's hw/char/serial.c,
// which Linux's 8250 driver is known to work with:
//
//   - Transmission is instantaneous: THR is always empty again by the time
//     the guest can look, so LSR.THRE and LSR.TEMT always read 1.
//   - The THR-empty interrupt is "armed" (QEMU's thr_ipending): setting
//     IER.ETBEI while THR is empty arms it, reading IIR while it is the
//     reported source disarms it, writing THR re-arms it. This is what the
//     8250 driver's THRE test at port startup checks.
//   - The received-data interrupt is raised as soon as one byte is in the
//     FIFO, whatever FCR's trigger level (there is no character-timeout
//     interrupt to rescue a partly filled FIFO, so none is needed).
//   - MCR.OUT2 does not gate the interrupt (as in QEMU and vm-superio).
//
// # Interrupt convention
//
// The interrupt output is driven as a level: irq.SetLevel(true) when the
// UART's IIR goes from "no interrupt pending" to pending, SetLevel(false)
// when it goes back, and never twice with the same value. On an ISA
// edge-triggered input (the PC's IRQ 3/4 as seen by KVM's in-kernel PIC and
// I/O APIC through KVM_IRQ_LINE) the rising edge is the interrupt, and the
// line is low again once the driver has serviced every source, ready for the
// next edge; this is what QEMU does. SetLevel is called with the UART's lock
// held, so a Line implementation must not call back into the UART.
//
// # Receive FIFO
//
// The host feeds bytes with Receive. The FIFO holds RXFIFOSize (64) bytes
// when FCR.FE has enabled the FIFOs and 1 byte (the 16450's holding
// register) when they are disabled. Receive never overruns: it accepts only
// what fits and says how many; SpaceAvailable tells the host when to try
// again. Overrun (LSR.OE) can only come from loopback mode, where the guest's
// own transmitted bytes are received.
package uart

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/pmvm/pmvm/vmm/devices"
)

// PortCount is the number of consecutive I/O ports the UART decodes.
const PortCount = 8

// RXFIFOSize is the receive FIFO's capacity in bytes with the FIFOs enabled
// (FCR.FE = 1). With them disabled the capacity is 1.
const RXFIFOSize = 64

// Register offsets from the base port.
const (
	RegData = 0 // read RBR, write THR; DLL when LCR.DLAB
	RegIER  = 1 // interrupt enable; DLM when LCR.DLAB
	RegIIR  = 2 // read IIR, write FCR
	RegLCR  = 3
	RegMCR  = 4
	RegLSR  = 5
	RegMSR  = 6
	RegSCR  = 7
)

// IER bits.
const (
	IERRDA  = 0x01 // ERBFI: received data available
	IERTHRE = 0x02 // ETBEI: transmitter holding register empty
	IERRLS  = 0x04 // ELSI: receiver line status
	IERMS   = 0x08 // EDSSI: modem status
	ierMask = 0x0F
)

// IIR values (interrupt identification, bits 0-3) and the FIFO bits.
const (
	IIRNone      = 0x01 // no interrupt pending
	IIRMS        = 0x00 // modem status (lowest priority)
	IIRTHRE      = 0x02 // THR empty
	IIRRDA       = 0x04 // received data available
	IIRRLS       = 0x06 // receiver line status (highest priority)
	IIRFIFO      = 0xC0 // FIFOs enabled
	iirIDMask    = 0x0F
	fcrFE        = 0x01 // FIFO enable
	fcrRXReset   = 0x02
	fcrTXReset   = 0x04
	fcrStoreMask = 0xC9 // FE, DMA mode, RX trigger level: the bits FCR keeps
)

// LCR, MCR, LSR and MSR bits.
const (
	LCRDLAB = 0x80

	MCRDTR   = 0x01
	MCRRTS   = 0x02
	MCROUT1  = 0x04
	MCROUT2  = 0x08
	MCRLoop  = 0x10
	mcrMask  = 0x1F
	LSRDR    = 0x01 // data ready
	LSROE    = 0x02 // overrun error
	LSRPE    = 0x04 // parity error (never set)
	LSRFE    = 0x08 // framing error (never set)
	LSRBI    = 0x10 // break interrupt (never set)
	LSRTHRE  = 0x20 // THR empty (always set)
	LSRTEMT  = 0x40 // transmitter empty (always set)
	lsrError = LSROE | LSRPE | LSRFE | LSRBI

	MSRDCTS  = 0x01
	MSRDDSR  = 0x02
	MSRTERI  = 0x04
	MSRDDCD  = 0x08
	MSRCTS   = 0x10
	MSRDSR   = 0x20
	MSRRI    = 0x40
	MSRDCD   = 0x80
	msrDelta = 0x0F

	// msrConnected is the modem status outside loopback: the host side of
	// the line is always "connected" (DCD, DSR, CTS asserted, no ring).
	msrConnected = MSRDCD | MSRDSR | MSRCTS
)

// Power-on register values.
const (
	defaultDLL = 0x0C // divisor 12: 9600 baud from the 1.8432 MHz clock
	defaultLSR = LSRTHRE | LSRTEMT
)

// State is every bit of guest-visible UART state, in plain exported fields
// so the VMM can save it and load it into a fresh UART.
type State struct {
	DLL, DLM uint8
	IER      uint8 // bits 0-3 only
	FCR      uint8 // the kept bits: FE, DMA mode, trigger level (0xC9)
	LCR      uint8
	MCR      uint8 // bits 0-4 only
	LSR      uint8 // THRE and TEMT always set; DR iff RX is not empty
	MSR      uint8 // lines (bits 4-7, following MCR in loopback) and deltas
	SCR      uint8
	RBR      uint8 // the last byte read from the receiver, read again while the FIFO is empty
	// THREPending is QEMU's thr_ipending: the THR-empty interrupt is armed.
	THREPending bool
	// RX is the receive FIFO's content, oldest byte first: at most
	// RXFIFOSize bytes with FCR.FE set, 1 without.
	RX []byte
}

// UART is a 16550A. The zero value is not usable; call New.
type UART struct {
	irq   devices.Line
	out   io.Writer
	space chan struct{} // capacity 1; see SpaceAvailable

	txErrors atomic.Uint64

	// outMu serialises writes to out so bytes leave in the order the guest
	// wrote them. It is taken while mu is held and mu is released before
	// out.Write, so a slow writer delays only the next THR write, never
	// Receive or register reads on other threads. Lock order: mu, outMu.
	outMu sync.Mutex
	txBuf [1]byte // guarded by outMu

	mu       sync.Mutex // guards every field below
	regs     State      // registers; regs.RX is unused, the FIFO is rx
	rx       [RXFIFOSize]byte
	rxHead   int  // index of the oldest byte in rx
	rxLen    int  // bytes in rx
	lineHigh bool // the level last given to irq
}

// New returns a UART in its power-on state whose interrupt output drives
// irq (nil means not connected) and whose transmitter writes to out (nil
// means discard). Errors from out are counted (TxErrors) and ignored.
func New(irq devices.Line, out io.Writer) *UART {
	if irq == nil {
		irq = devices.NoLine{}
	}
	if out == nil {
		out = io.Discard
	}
	u := &UART{irq: irq, out: out, space: make(chan struct{}, 1)}
	u.resetLocked()
	return u
}

// Reset puts the UART back in its power-on state (the receive FIFO is
// emptied) and lowers its interrupt output.
func (u *UART) Reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.resetLocked()
	u.updateIRQLocked()
	u.signalSpaceLocked()
}

func (u *UART) resetLocked() {
	u.regs = State{DLL: defaultDLL, LSR: defaultLSR, MSR: msrConnected}
	u.rxHead, u.rxLen = 0, 0
}

// TxErrors returns how many transmitted bytes out refused with an error.
func (u *UART) TxErrors() uint64 { return u.txErrors.Load() }

// SpaceAvailable returns a channel that receives a value (it has a buffer of
// one, so signals never block and coalesce) whenever room may have appeared
// in the receive FIFO: the guest read a byte, reset the FIFO, or left
// loopback mode. A host goroutine feeding Receive waits on it when Receive
// accepts less than it offered. Treat a signal as a hint and call Receive
// again; a timeout beside it is cheap insurance.
func (u *UART) SpaceAvailable() <-chan struct{} { return u.space }

// Receive puts host-to-guest bytes into the receive FIFO and returns how
// many it accepted (0 when the FIFO is full, or in loopback mode where the
// receiver is disconnected from the line). It never blocks and never drops
// a byte it reports as accepted.
func (u *UART) Receive(p []byte) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.regs.MCR&MCRLoop != 0 {
		return 0
	}
	n := 0
	for n < len(p) && u.rxLen < u.rxCapLocked() {
		u.pushLocked(p[n])
		n++
	}
	if n > 0 {
		u.updateIRQLocked()
	}
	return n
}

// ReceiverStatus says in a sentence why the receive FIFO may not be
// draining, from what the guest has programmed: a host goroutine whose
// bytes have not been taken for a long time logs it, so a stalled line
// tells whether the guest closed the port (IER off) or did not service a
// raised interrupt.
func (u *UART) ReceiverStatus() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	r := &u.regs
	fill := fmt.Sprintf("%d of %d bytes waiting in the receive FIFO", u.rxLen, u.rxCapLocked())
	switch {
	case r.MCR&MCRLoop != 0:
		return fmt.Sprintf("the guest put the UART in loopback mode (MCR %#02x): the receiver does not listen to the host; %s", r.MCR, fill)
	case r.IER&IERRDA == 0:
		return fmt.Sprintf("the guest has the received-data interrupt off (IER %#02x): no program in the guest has the port open, or its driver is not reading; %s", r.IER, fill)
	case u.lineHigh:
		return fmt.Sprintf("the interrupt is raised (IER %#02x, IIR %#02x) and the guest has not serviced it: a lost interrupt in the guest's interrupt controller or driver; %s", r.IER, u.iirLocked(), fill)
	default:
		return fmt.Sprintf("no interrupt is pending (IER %#02x, IIR %#02x, LSR %#02x); %s", r.IER, u.iirLocked(), r.LSR, fill)
	}
}

// Read implements a guest port read of len(data) bytes at offset from the
// base port. Every byte is decoded as a separate access to offset+i, as the
// ISA bus splits wide accesses to an 8-bit device; bytes outside 0-7 read
// 0xFF.
func (u *UART) Read(offset uint16, data []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := range data {
		o := int(offset) + i
		if o >= PortCount {
			data[i] = 0xFF
			continue
		}
		data[i] = u.readRegLocked(o)
	}
	u.updateIRQLocked()
}

// Write implements a guest port write; see Read for how wide accesses are
// split. Writes to LSR, MSR and offsets past 7 are ignored.
func (u *UART) Write(offset uint16, data []byte) {
	u.mu.Lock()
	send, tx := false, byte(0)
	for i, b := range data {
		o := int(offset) + i
		if o >= PortCount {
			break
		}
		// Offsets only increase, so at most one byte reaches THR.
		if u.writeRegLocked(o, b) {
			send, tx = true, b
		}
	}
	u.updateIRQLocked()
	if !send {
		u.mu.Unlock()
		return
	}
	u.outMu.Lock()
	u.mu.Unlock()
	u.txBuf[0] = tx
	if _, err := u.out.Write(u.txBuf[:]); err != nil {
		u.txErrors.Add(1)
	}
	u.outMu.Unlock()
}

func (u *UART) dlab() bool { return u.regs.LCR&LCRDLAB != 0 }

func (u *UART) readRegLocked(o int) uint8 {
	r := &u.regs
	switch o {
	case RegData:
		if u.dlab() {
			return r.DLL
		}
		if u.rxLen > 0 {
			r.RBR = u.popLocked()
		}
		return r.RBR
	case RegIER:
		if u.dlab() {
			return r.DLM
		}
		return r.IER
	case RegIIR:
		v := u.iirLocked()
		if v&iirIDMask == IIRTHRE {
			r.THREPending = false
		}
		return v
	case RegLCR:
		return r.LCR
	case RegMCR:
		return r.MCR
	case RegLSR:
		v := r.LSR
		r.LSR &^= lsrError
		return v
	case RegMSR:
		v := r.MSR
		r.MSR &^= msrDelta
		return v
	default: // RegSCR
		return r.SCR
	}
}

// writeRegLocked applies one byte write and reports whether b must be
// transmitted to out.
func (u *UART) writeRegLocked(o int, b uint8) bool {
	r := &u.regs
	switch o {
	case RegData:
		if u.dlab() {
			r.DLL = b
			return false
		}
		// The byte leaves THR at once: THRE and TEMT stay set and the
		// THR-empty interrupt is re-armed.
		r.THREPending = true
		if r.MCR&MCRLoop != 0 {
			if u.rxLen < u.rxCapLocked() {
				u.pushLocked(b)
			} else {
				r.LSR |= LSROE
			}
			return false
		}
		return true
	case RegIER:
		if u.dlab() {
			r.DLM = b
			return false
		}
		v := b & ierMask
		changed := r.IER ^ v
		r.IER = v
		if changed&IERTHRE != 0 {
			r.THREPending = v&IERTHRE != 0 && r.LSR&LSRTHRE != 0
		}
	case RegIIR:
		u.writeFCRLocked(b)
	case RegLCR:
		r.LCR = b
	case RegMCR:
		u.writeMCRLocked(b & mcrMask)
	case RegSCR:
		r.SCR = b
	}
	return false // LSR and MSR writes are ignored
}

func (u *UART) writeFCRLocked(b uint8) {
	r := &u.regs
	if (b^r.FCR)&fcrFE != 0 {
		// Enabling or disabling the FIFOs empties them.
		b |= fcrRXReset | fcrTXReset
	}
	if b&fcrRXReset != 0 {
		u.rxHead, u.rxLen = 0, 0
		r.LSR &^= LSRDR | LSRBI
		u.signalSpaceLocked()
	}
	if b&fcrTXReset != 0 {
		r.LSR |= LSRTHRE | LSRTEMT
		r.THREPending = true
	}
	r.FCR = b & fcrStoreMask
}

func (u *UART) writeMCRLocked(v uint8) {
	r := &u.regs
	wasLoop := r.MCR&MCRLoop != 0
	r.MCR = v
	oldLines := r.MSR &^ msrDelta
	newLines := modemLines(v)
	delta := uint8(0)
	if (oldLines^newLines)&MSRCTS != 0 {
		delta |= MSRDCTS
	}
	if (oldLines^newLines)&MSRDSR != 0 {
		delta |= MSRDDSR
	}
	if oldLines&MSRRI != 0 && newLines&MSRRI == 0 {
		delta |= MSRTERI // trailing edge of ring indicator
	}
	if (oldLines^newLines)&MSRDCD != 0 {
		delta |= MSRDDCD
	}
	r.MSR = newLines | r.MSR&msrDelta | delta
	if wasLoop && v&MCRLoop == 0 {
		u.signalSpaceLocked() // the receiver listens to the host again
	}
}

// modemLines returns MSR bits 4-7 for MCR value mcr: in loopback the
// outputs are wired back to the inputs (DTR->DSR, RTS->CTS, OUT1->RI,
// OUT2->DCD), otherwise the host side is connected.
func modemLines(mcr uint8) uint8 {
	if mcr&MCRLoop == 0 {
		return msrConnected
	}
	var v uint8
	if mcr&MCRDTR != 0 {
		v |= MSRDSR
	}
	if mcr&MCRRTS != 0 {
		v |= MSRCTS
	}
	if mcr&MCROUT1 != 0 {
		v |= MSRRI
	}
	if mcr&MCROUT2 != 0 {
		v |= MSRDCD
	}
	return v
}

// iirLocked computes IIR from the sources in priority order.
func (u *UART) iirLocked() uint8 {
	r := &u.regs
	id := uint8(IIRNone)
	switch {
	case r.IER&IERRLS != 0 && r.LSR&lsrError != 0:
		id = IIRRLS
	case r.IER&IERRDA != 0 && r.LSR&LSRDR != 0:
		id = IIRRDA
	case r.IER&IERTHRE != 0 && r.THREPending:
		id = IIRTHRE
	case r.IER&IERMS != 0 && r.MSR&msrDelta != 0:
		id = IIRMS
	}
	if r.FCR&fcrFE != 0 {
		id |= IIRFIFO
	}
	return id
}

// updateIRQLocked drives the interrupt output to the current IIR state,
// calling irq only when the level changes.
func (u *UART) updateIRQLocked() {
	pending := u.iirLocked()&IIRNone == 0
	if pending != u.lineHigh {
		u.lineHigh = pending
		u.irq.SetLevel(pending)
	}
}

func (u *UART) rxCapLocked() int {
	if u.regs.FCR&fcrFE != 0 {
		return RXFIFOSize
	}
	return 1
}

// pushLocked appends b to the FIFO; the caller has checked there is room.
func (u *UART) pushLocked(b byte) {
	u.rx[(u.rxHead+u.rxLen)%RXFIFOSize] = b
	u.rxLen++
	u.regs.LSR |= LSRDR
}

// popLocked removes the oldest byte; the caller has checked rxLen > 0.
func (u *UART) popLocked() byte {
	b := u.rx[u.rxHead]
	u.rxHead = (u.rxHead + 1) % RXFIFOSize
	u.rxLen--
	if u.rxLen == 0 {
		u.regs.LSR &^= LSRDR
	}
	u.signalSpaceLocked()
	return b
}

func (u *UART) signalSpaceLocked() {
	select {
	case u.space <- struct{}{}:
	default:
	}
}

// State returns a copy of the UART's state.
func (u *UART) State() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.regs
	s.RX = make([]byte, u.rxLen)
	for i := range s.RX {
		s.RX[i] = u.rx[(u.rxHead+i)%RXFIFOSize]
	}
	return s
}

// SetState replaces the UART's state with s after checking that s is one
// a UART could be in; on error nothing changes. The interrupt output is then
// driven to the level s implies, even if it was already at that level, so a
// freshly created irqchip learns it.
func (u *UART) SetState(s State) error {
	if err := s.Validate(); err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.regs = s
	u.regs.RX = nil
	u.rxHead, u.rxLen = 0, copy(u.rx[:], s.RX)
	u.lineHigh = u.iirLocked()&IIRNone == 0
	u.irq.SetLevel(u.lineHigh)
	u.signalSpaceLocked()
	return nil
}

// Validate reports why s is not a state a UART can be in, or nil.
func (s State) Validate() error {
	var errs []error
	if s.IER&^ierMask != 0 {
		errs = append(errs, fmt.Errorf("IER %#02x has bits above bit 3 set", s.IER))
	}
	if s.FCR&^fcrStoreMask != 0 {
		errs = append(errs, fmt.Errorf("FCR %#02x has bits outside %#02x set", s.FCR, fcrStoreMask))
	}
	if s.MCR&^mcrMask != 0 {
		errs = append(errs, fmt.Errorf("MCR %#02x has bits above bit 4 set", s.MCR))
	}
	capacity := 1
	if s.FCR&fcrFE != 0 {
		capacity = RXFIFOSize
	}
	if len(s.RX) > capacity {
		errs = append(errs, fmt.Errorf("receive FIFO holds %d bytes, more than its capacity %d (FCR %#02x)", len(s.RX), capacity, s.FCR))
	}
	if s.LSR&(LSRTHRE|LSRTEMT) != LSRTHRE|LSRTEMT {
		errs = append(errs, fmt.Errorf("LSR %#02x: THRE and TEMT must be set (transmission is instantaneous)", s.LSR))
	}
	if s.LSR&(LSRPE|LSRFE|LSRBI|0x80) != 0 {
		errs = append(errs, fmt.Errorf("LSR %#02x: parity, framing, break and FIFO error bits are never set by this model", s.LSR))
	}
	if (s.LSR&LSRDR != 0) != (len(s.RX) > 0) {
		errs = append(errs, fmt.Errorf("LSR %#02x: DR must be set exactly when the receive FIFO (%d bytes) is not empty", s.LSR, len(s.RX)))
	}
	if want := modemLines(s.MCR); s.MSR&^msrDelta != want {
		errs = append(errs, fmt.Errorf("MSR %#02x: lines must be %#02x for MCR %#02x", s.MSR, want, s.MCR))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid UART state: %w", errors.Join(errs...))
	}
	return nil
}
