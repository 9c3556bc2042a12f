// Package uarttest drives a uart.UART the way a Linux guest does, for
// tests: the register sequences of Linux's 8250 driver (open, set_termios,
// the interrupt handler, transmit, close) on their own goroutines as on a
// multi-CPU guest, behind an edge-triggered interrupt input like KVM's I/O
// APIC. A test feeds host bytes beside it and checks that the line keeps
// flowing (issue 12 #18: the agent line stopped draining).
package uarttest

import (
	"bytes"
	"sync"

	"github.com/pmvm/pmvm/vmm/devices/uart"
)

// EdgePin is an edge-triggered interrupt input as KVM's I/O APIC has it: a
// rising edge while the pin is unmasked makes the interrupt pending (once:
// edges while it is pending coalesce, as in the LAPIC's IRR); a rising edge
// while it is masked is lost, as KVM does not deliver an edge on unmask.
// Pass it to uart.New as the UART's interrupt line.
type EdgePin struct {
	mu      sync.Mutex
	high    bool
	masked  bool
	lost    int
	pending chan struct{} // capacity 1
}

// NewEdgePin returns a masked pin (no driver has asked for the interrupt).
func NewEdgePin() *EdgePin { return &EdgePin{masked: true, pending: make(chan struct{}, 1)} }

// SetLevel implements devices.Line.
func (p *EdgePin) SetLevel(high bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if high && !p.high {
		if p.masked {
			p.lost++
		} else {
			select {
			case p.pending <- struct{}{}:
			default:
			}
		}
	}
	p.high = high
}

func (p *EdgePin) setMasked(m bool) {
	p.mu.Lock()
	p.masked = m
	p.mu.Unlock()
}

// Level is the line's level now.
func (p *EdgePin) Level() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.high
}

// Lost counts rising edges that came while the pin was masked.
func (p *EdgePin) Lost() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lost
}

// Linux8250 is the part of drivers/tty/serial/8250 (6.1) that touches the
// registers: startup, set_termios, the interrupt handler, start_tx and
// shutdown, with the port lock and the irq chain lock where Linux has them,
// plus the tty's receive buffer a process reads.
type Linux8250 struct {
	u   *uart.UART
	pin *EdgePin

	port   sync.Mutex // uart_port lock; guards every field below
	ier    uint8      // up->ier, the driver's shadow of IER
	xmit   []byte     // the circ buffer of bytes to transmit
	rx     []byte     // received bytes not read yet (the tty buffers)
	rxCond *sync.Cond
	closed bool

	chain sync.Mutex // irq_info lock (serial8250_interrupt)
	stop  chan struct{}
	done  chan struct{}

	// BugTHRE and BugTXEN are what the driver's open concluded of the
	// UART (UART_BUG_THRE: poll by timer; UART_BUG_TXEN: kick transmit).
	BugTHRE, BugTXEN bool
}

// NewLinux8250 returns the driver for u, whose interrupt line is pin.
func NewLinux8250(u *uart.UART, pin *EdgePin) *Linux8250 {
	d := &Linux8250{u: u, pin: pin}
	d.rxCond = sync.NewCond(&d.port)
	return d
}

func (d *Linux8250) in(o uint16) uint8 {
	var b [1]byte
	d.u.Read(o, b[:])
	return b[0]
}

func (d *Linux8250) out(o uint16, v uint8) { d.u.Write(o, []byte{v}) }

// Open is an open(2) of the port: serial8250_do_startup, whose request_irq
// unmasks the pin, then set_termios.
func (d *Linux8250) Open() {
	// serial8250_clear_fifos, then serial8250_clear_interrupts.
	d.out(uart.RegIIR, fcrFE)
	d.out(uart.RegIIR, fcrFE|fcrClear)
	d.out(uart.RegIIR, 0)
	d.clearInterrupts()
	d.port.Lock()
	d.closed = false
	d.port.Unlock()
	d.stop, d.done = make(chan struct{}), make(chan struct{})
	go d.irqThread()
	d.pin.setMasked(false)
	// The THRE test: does IER.THRI re-assert THRE after IIR cleared it?
	d.port.Lock()
	d.out(uart.RegIER, uart.IERTHRE)
	iir1 := d.in(uart.RegIIR)
	d.out(uart.RegIER, 0)
	d.out(uart.RegIER, uart.IERTHRE)
	iir := d.in(uart.RegIIR)
	d.out(uart.RegIER, 0)
	d.port.Unlock()
	d.BugTHRE = iir1&uart.IIRNone == 0 && iir&uart.IIRNone != 0
	// 8N1, OUT2 (PC UARTs need it for interrupts), then the TXEN test.
	d.out(uart.RegLCR, lcr8N1)
	d.port.Lock()
	d.out(uart.RegMCR, uart.MCRDTR|uart.MCRRTS|uart.MCROUT2)
	d.out(uart.RegIER, uart.IERTHRE)
	lsr := d.in(uart.RegLSR)
	iir = d.in(uart.RegIIR)
	d.out(uart.RegIER, 0)
	d.BugTXEN = lsr&uart.LSRTEMT != 0 && iir&uart.IIRNone != 0
	d.port.Unlock()
	d.clearInterrupts()
	d.port.Lock()
	d.ier = uart.IERRLS | uart.IERRDA
	d.port.Unlock()
	d.SetTermios()
}

// Register values the driver writes.
const (
	fcrFE    = 0x01
	fcrClear = 0x06 // clear RX and TX FIFOs
	fcrTrig8 = 0x80 // RX trigger level 8 (UART_FCR_R_TRIG_10)
	lcr8N1   = 0x03
)

func (d *Linux8250) clearInterrupts() {
	d.in(uart.RegLSR)
	d.in(uart.RegData)
	d.in(uart.RegIIR)
	d.in(uart.RegMSR)
}

// SetTermios is serial8250_do_set_termios for 8N1 at 9600 baud with the
// FIFOs on, as a tcsetattr(3) makes it (qemu-ga's raw mode).
func (d *Linux8250) SetTermios() {
	d.port.Lock()
	defer d.port.Unlock()
	d.out(uart.RegIER, d.ier)
	d.out(uart.RegLCR, lcr8N1|uart.LCRDLAB)
	d.out(uart.RegData, 12) // DLL
	d.out(uart.RegIER, 0)   // DLM
	d.out(uart.RegLCR, lcr8N1)
	d.out(uart.RegIIR, fcrFE) // "emulated UARTs need two steps"
	d.out(uart.RegIIR, fcrFE|fcrTrig8)
	d.out(uart.RegMCR, uart.MCRDTR|uart.MCRRTS|uart.MCROUT2)
}

// Close is the last close(2): serial8250_do_shutdown, whose free_irq
// masks the pin. ReadLine callers return.
func (d *Linux8250) Close() {
	d.port.Lock()
	d.ier = 0
	d.out(uart.RegIER, 0)
	d.closed = true
	d.rxCond.Broadcast()
	d.port.Unlock()
	d.out(uart.RegLCR, d.in(uart.RegLCR)&^0x40) // break off
	d.out(uart.RegIIR, fcrFE)
	d.out(uart.RegIIR, fcrFE|fcrClear)
	d.out(uart.RegIIR, 0)
	d.in(uart.RegData)
	d.pin.setMasked(true)
	close(d.stop)
	<-d.done
}

// irqThread takes every delivered interrupt and runs the handler.
func (d *Linux8250) irqThread() {
	defer close(d.done)
	for {
		select {
		case <-d.pin.pending:
			d.interrupt()
		case <-d.stop:
			return
		}
	}
}

// interrupt is serial8250_interrupt with one port on the chain: handle
// until a pass finds nothing, at most PASS_LIMIT passes.
func (d *Linux8250) interrupt() {
	d.chain.Lock()
	defer d.chain.Unlock()
	for pass := 0; pass < 512; pass++ {
		if !d.handle() {
			return
		}
	}
}

// handle is serial8250_default_handle_irq + serial8250_handle_irq: IIR is
// read outside the port lock, as Linux does; rx_chars reads at most 256
// bytes per call.
func (d *Linux8250) handle() bool {
	iir := d.in(uart.RegIIR)
	if iir&uart.IIRNone != 0 {
		return false
	}
	d.port.Lock()
	defer d.port.Unlock()
	lsr := d.in(uart.RegLSR)
	if lsr&(uart.LSRDR|uart.LSRBI) != 0 {
		for n := 0; n < 256 && lsr&(uart.LSRDR|uart.LSRBI) != 0; n++ {
			d.rx = append(d.rx, d.in(uart.RegData))
			lsr = d.in(uart.RegLSR)
		}
		d.rxCond.Broadcast()
	}
	d.in(uart.RegMSR)
	if lsr&uart.LSRTHRE != 0 && d.ier&uart.IERTHRE != 0 {
		d.txChars()
	}
	return true
}

// txChars is serial8250_tx_chars (tx_loadsz 16); the port lock is held.
func (d *Linux8250) txChars() {
	for n := 0; n < 16 && len(d.xmit) > 0; n++ {
		d.out(uart.RegData, d.xmit[0])
		d.xmit = d.xmit[1:]
	}
	if len(d.xmit) == 0 && d.ier&uart.IERTHRE != 0 { // __stop_tx
		d.ier &^= uart.IERTHRE
		d.out(uart.RegIER, d.ier)
	}
}

// Write is a write(2) to the tty: queue p and start_tx.
func (d *Linux8250) Write(p []byte) {
	d.port.Lock()
	defer d.port.Unlock()
	d.xmit = append(d.xmit, p...)
	if d.ier&uart.IERTHRE == 0 {
		d.ier |= uart.IERTHRE
		d.out(uart.RegIER, d.ier)
		if d.BugTXEN && d.in(uart.RegLSR)&uart.LSRTHRE != 0 {
			d.txChars()
		}
	}
}

// TakeReceived returns and forgets everything received so far.
func (d *Linux8250) TakeReceived() []byte {
	d.port.Lock()
	defer d.port.Unlock()
	b := append([]byte(nil), d.rx...)
	d.rx = d.rx[:0]
	return b
}

// ReadLine blocks until a whole line (without its '\n') was received, or
// returns false once the port is closed.
func (d *Linux8250) ReadLine() ([]byte, bool) {
	d.port.Lock()
	defer d.port.Unlock()
	for {
		if i := bytes.IndexByte(d.rx, '\n'); i >= 0 {
			line := append([]byte(nil), d.rx[:i]...)
			d.rx = d.rx[i+1:]
			return line, true
		}
		if d.closed {
			return nil, false
		}
		d.rxCond.Wait()
	}
}

// Backlog is how many received bytes no reader took yet and how many
// written bytes wait to be transmitted, for a test's failure message.
func (d *Linux8250) Backlog() (received, unsent int) {
	d.port.Lock()
	defer d.port.Unlock()
	return len(d.rx), len(d.xmit)
}
