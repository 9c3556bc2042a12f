// Package i8042 models the PC keyboard controller with nothing plugged into
// it: enough for Linux's i8042 driver to probe it cleanly and, above all,
// for the guest to reset the machine through it (command 0xFE on port 0x64,
// Linux's "reboot=kbd" path and its fallback when ACPI reset fails).
//
// Ports: offset 0 is the data port (0x60), offset 4 the status/command port
// (0x64). Offsets 1-3 (0x61-0x63) are not the controller's — 0x61 belongs to
// KVM's in-kernel PIT/speaker — and read 0xFF, ignore writes.
//
// Commands answer at once; their replies wait in a small output queue
// (OutputQueueSize bytes) read through the data port. With the queue empty
// the data port returns the last byte read. Bytes written to the keyboard
// or the auxiliary device find no device and are dropped; no interrupt is
// ever raised (the IRQ 1 and 12 lines are not connected).
//
// What Linux 6.1 does with it: self-test (0xAA) passes, the CTR reads back
// stably, MUX detection fails (AUX loopback echoes the byte unchanged), the
// AUX port passes its register tests but fails the IRQ delivery test after a
// 250 ms wait, so only the KBD port is registered, and atkbd finds no
// keyboard (asynchronously). Boot with i8042.noaux to skip the 250 ms, or
// leave the FADT's 8042 flag (IAPC_BOOT_ARCH bit 1) clear so Linux does not
// probe at all ("PNP: No PS/2 controller found"); reset via 0x64 works
// either way.
package i8042

import (
	"errors"
	"fmt"
	"sync"
)

// PortCount is the size of the port range starting at the data port that
// the VMM registers (0x60-0x64); only offsets 0 and 4 are decoded.
const PortCount = 5

// Port offsets.
const (
	OffsetData    = 0 // 0x60
	OffsetCommand = 4 // 0x64: read status, write command
)

// OutputQueueSize bounds the replies waiting to be read. Linux's i8042_flush
// gives up (and logs) after 16 bytes, so the queue stays below that.
const OutputQueueSize = 8

// Status register bits.
const (
	StatusOBF     = 0x01 // output buffer full: the data port has a byte
	StatusIBF     = 0x02 // input buffer full: never, commands complete at once
	StatusSys     = 0x04 // system flag, mirrors CTR bit 2
	StatusCmd     = 0x08 // the last write was to the command port
	StatusUnlock  = 0x10 // keyboard not inhibited by the keylock
	StatusAuxData = 0x20 // the byte in the output buffer is from the AUX port
)

// Controller configuration byte (CTR, "command byte") bits.
const (
	CTRKbdInt = 0x01
	CTRAuxInt = 0x02
	CTRSys    = 0x04
	CTRKbdDis = 0x10
	CTRAuxDis = 0x20
	CTRXlate  = 0x40
)

// Output port bits.
const (
	OutPortReset = 0x01 // 0 holds the CPU in reset
	OutPortA20   = 0x02
)

// Controller commands.
const (
	CmdReadCTR       = 0x20
	CmdWriteCTR      = 0x60
	CmdDisableAux    = 0xA7
	CmdEnableAux     = 0xA8
	CmdTestAux       = 0xA9
	CmdSelfTest      = 0xAA
	CmdTestKbd       = 0xAB
	CmdDisableKbd    = 0xAD
	CmdEnableKbd     = 0xAE
	CmdReadOutPort   = 0xD0
	CmdWriteOutPort  = 0xD1
	CmdWriteKbdOut   = 0xD2 // next data byte appears as if from the keyboard
	CmdWriteAuxOut   = 0xD3 // next data byte appears as if from the AUX device
	CmdWriteAux      = 0xD4 // next data byte goes to the AUX device
	CmdDisableA20    = 0xDD
	CmdEnableA20     = 0xDF
	CmdPulseResetLow = 0xF0 // 0xF0-0xFF pulse output port bits 0-3 whose command bit is 0
	CmdReset         = 0xFE // pulse bit 0: reset the CPU
)

// Replies.
const (
	SelfTestOK      = 0x55
	InterfaceTestOK = 0x00
)

// Power-on values: what a PC BIOS leaves (keyboard interrupt, system flag,
// scancode translation; AUX disabled), no reset asserted, A20 enabled.
const (
	defaultCTR     = CTRKbdInt | CTRSys | CTRXlate | CTRAuxDis
	defaultOutPort = OutPortReset | OutPortA20
)

// OutByte is one byte waiting in the output queue.
type OutByte struct {
	Value uint8
	Aux   bool // from the AUX port (status bit 5)
}

// State is the controller's guest-visible state.
type State struct {
	CTR     uint8
	OutPort uint8
	// Pending is the command waiting for its data byte (0x60, 0xD1-0xD4),
	// or 0.
	Pending  uint8
	CmdLast  bool      // status bit 3
	Out      []OutByte // the output queue, oldest first, at most OutputQueueSize
	LastRead uint8     // returned by data reads while the queue is empty
}

// I8042 is the controller.
type I8042 struct {
	onReset func()

	mu sync.Mutex // guards every field below
	st State      // st.Out is unused; the queue is out
	// out is the output queue; outLen bytes from outHead.
	out     [OutputQueueSize]OutByte
	outHead int
	outLen  int
}

// New returns a controller in its power-on state. onReset (nil: ignored)
// is called when the guest pulses the reset line (0xFE, any even 0xF0-0xFE,
// or an output port write with bit 0 clear); it runs on the vCPU thread
// doing the write, outside the controller's lock, so it may call back in.
func New(onReset func()) *I8042 {
	k := &I8042{onReset: onReset}
	k.resetLocked()
	return k
}

// Reset returns the controller to its power-on state.
func (k *I8042) Reset() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.resetLocked()
}

func (k *I8042) resetLocked() {
	k.st = State{CTR: defaultCTR, OutPort: defaultOutPort}
	k.outHead, k.outLen = 0, 0
}

// Read implements a guest port read. Each byte is a separate access to
// offset+i (ISA splits wide accesses); offsets other than 0 and 4 read 0xFF.
func (k *I8042) Read(offset uint16, data []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range data {
		switch int(offset) + i {
		case OffsetData:
			if k.outLen > 0 {
				k.st.LastRead = k.out[k.outHead].Value
				k.outHead = (k.outHead + 1) % OutputQueueSize
				k.outLen--
			}
			data[i] = k.st.LastRead
		case OffsetCommand:
			data[i] = k.statusLocked()
		default:
			data[i] = 0xFF
		}
	}
}

// Write implements a guest port write; see Read.
func (k *I8042) Write(offset uint16, data []byte) {
	reset := false
	k.mu.Lock()
	for i, b := range data {
		switch int(offset) + i {
		case OffsetData:
			reset = k.writeDataLocked(b) || reset
		case OffsetCommand:
			reset = k.writeCommandLocked(b) || reset
		}
	}
	k.mu.Unlock()
	if reset && k.onReset != nil {
		k.onReset()
	}
}

func (k *I8042) statusLocked() uint8 {
	s := uint8(StatusUnlock)
	if k.outLen > 0 {
		s |= StatusOBF
		if k.out[k.outHead].Aux {
			s |= StatusAuxData
		}
	}
	if k.st.CTR&CTRSys != 0 {
		s |= StatusSys
	}
	if k.st.CmdLast {
		s |= StatusCmd
	}
	return s
}

// queueLocked appends a reply; when the queue is full the byte is dropped.
func (k *I8042) queueLocked(v uint8, aux bool) {
	if k.outLen == OutputQueueSize {
		return
	}
	k.out[(k.outHead+k.outLen)%OutputQueueSize] = OutByte{Value: v, Aux: aux}
	k.outLen++
}

// writeCommandLocked runs a controller command and reports whether it
// pulses the reset line. A new command cancels one waiting for its data.
func (k *I8042) writeCommandLocked(c uint8) bool {
	k.st.CmdLast = true
	k.st.Pending = 0
	switch c {
	case CmdReadCTR:
		k.queueLocked(k.st.CTR, false)
	case CmdWriteCTR, CmdWriteOutPort, CmdWriteKbdOut, CmdWriteAuxOut, CmdWriteAux:
		k.st.Pending = c
	case CmdDisableAux:
		k.st.CTR |= CTRAuxDis
	case CmdEnableAux:
		k.st.CTR &^= CTRAuxDis
	case CmdTestAux, CmdTestKbd:
		k.queueLocked(InterfaceTestOK, false)
	case CmdSelfTest:
		k.queueLocked(SelfTestOK, false)
	case CmdDisableKbd:
		k.st.CTR |= CTRKbdDis
	case CmdEnableKbd:
		k.st.CTR &^= CTRKbdDis
	case CmdReadOutPort:
		k.queueLocked(k.st.OutPort, false)
	case CmdDisableA20:
		k.st.OutPort &^= OutPortA20
	case CmdEnableA20:
		k.st.OutPort |= OutPortA20
	default:
		if c >= CmdPulseResetLow && c&OutPortReset == 0 {
			return true
		}
		// Other commands (RAM access 0x21-0x3F/0x61-0x7F, input port,
		// password, ...) are not used by Linux and are ignored.
	}
	return false
}

// writeDataLocked handles a data port write and reports whether it resets.
func (k *I8042) writeDataLocked(v uint8) bool {
	k.st.CmdLast = false
	p := k.st.Pending
	k.st.Pending = 0
	switch p {
	case CmdWriteCTR:
		k.st.CTR = v
	case CmdWriteOutPort:
		k.st.OutPort = v | OutPortReset // the reset line is released after the pulse
		return v&OutPortReset == 0
	case CmdWriteKbdOut:
		k.queueLocked(v, false)
	case CmdWriteAuxOut:
		k.queueLocked(v, true)
	}
	// 0 (to the keyboard) and CmdWriteAux (to the AUX device): nothing is
	// attached, the byte is dropped.
	return false
}

// State returns a copy of the controller's state.
func (k *I8042) State() State {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.st
	s.Out = make([]OutByte, k.outLen)
	for i := range s.Out {
		s.Out[i] = k.out[(k.outHead+i)%OutputQueueSize]
	}
	return s
}

// SetState replaces the controller's state after checking it; on error
// nothing changes.
func (k *I8042) SetState(s State) error {
	if err := s.Validate(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.st = s
	k.st.Out = nil
	k.outHead, k.outLen = 0, copy(k.out[:], s.Out)
	return nil
}

// Validate reports why s is not a state the controller can be in, or nil.
func (s State) Validate() error {
	var errs []error
	switch s.Pending {
	case 0, CmdWriteCTR, CmdWriteOutPort, CmdWriteKbdOut, CmdWriteAuxOut, CmdWriteAux:
	default:
		errs = append(errs, fmt.Errorf("pending command %#02x takes no data byte", s.Pending))
	}
	if s.Pending != 0 && !s.CmdLast {
		errs = append(errs, fmt.Errorf("pending command %#02x but the last write was data", s.Pending))
	}
	if len(s.Out) > OutputQueueSize {
		errs = append(errs, fmt.Errorf("output queue holds %d bytes, more than %d", len(s.Out), OutputQueueSize))
	}
	if s.OutPort&OutPortReset == 0 {
		errs = append(errs, fmt.Errorf("output port %#02x holds the CPU in reset", s.OutPort))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid i8042 state: %w", errors.Join(errs...))
	}
	return nil
}
