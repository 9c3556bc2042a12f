package uart

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"
)

// This file drives the UART the way Linux's 8250 driver and qemu-ga drive
// COM2 right after boot (issue 12 #18: once in ~40 agent operations the
// line stopped draining), while a host goroutine feeds requests exactly as
// vmm.SerialPort.feed does: the guest opens the port while host bytes are
// already pouring in, the interrupt reaches the guest through an
// edge-triggered input that loses edges while it is masked (KVM's I/O
// APIC), and the interrupt handler runs on another "CPU" than the process
// that writes replies. Every request must get its reply: a lost THRE or
// received-data interrupt shows up as a round trip that never ends.

// edgePin is an edge-triggered interrupt input as KVM's I/O APIC has it: a
// rising edge while the pin is unmasked makes the interrupt pending (once:
// edges while it is pending coalesce); a rising edge while it is masked is
// lost, as KVM does not re-deliver edge interrupts on unmask.
type edgePin struct {
	mu      sync.Mutex
	high    bool
	masked  bool
	pending chan struct{} // capacity 1: the LAPIC's IRR bit
	lost    int
}

func newEdgePin() *edgePin { return &edgePin{masked: true, pending: make(chan struct{}, 1)} }

func (p *edgePin) SetLevel(high bool) {
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

func (p *edgePin) setMasked(m bool) {
	p.mu.Lock()
	p.masked = m
	p.mu.Unlock()
}

// linux8250 is the part of drivers/tty/serial/8250 (6.1) that touches the
// registers: startup, set_termios, the interrupt handler, start_tx and
// shutdown, with the port lock and the irq chain lock where Linux has them.
type linux8250 struct {
	u   *UART
	pin *edgePin

	port   sync.Mutex // uart_port lock
	ier    uint8      // up->ier, the driver's shadow of IER
	xmit   []byte     // the circ buffer of bytes to transmit
	rx     []byte     // the tty flip buffer, read by the process
	rxCond *sync.Cond

	chain sync.Mutex // irq_info lock (serial8250_interrupt)
	stop  chan struct{}
	done  chan struct{}

	bugTHRE, bugTXEN bool
}

func newLinux8250(u *UART, pin *edgePin) *linux8250 {
	d := &linux8250{u: u, pin: pin}
	d.rxCond = sync.NewCond(&d.port)
	return d
}

func (d *linux8250) in(o uint16) uint8     { return rd(d.u, o) }
func (d *linux8250) out(o uint16, v uint8) { wr(d.u, o, v) }

// startup is serial8250_do_startup followed by uart_change_line_settings
// (set_termios), as an open(2) of /dev/ttyS1 does.
func (d *linux8250) startup() {
	// serial8250_clear_fifos, then serial8250_clear_interrupts.
	d.out(RegIIR, fcrFE)
	d.out(RegIIR, fcrFE|fcrRXReset|fcrTXReset)
	d.out(RegIIR, 0)
	d.clearInterrupts()
	// request_irq: the I/O APIC pin is unmasked and the handler installed.
	d.stop, d.done = make(chan struct{}), make(chan struct{})
	go d.irqThread()
	d.pin.setMasked(false)
	// The THRE test.
	d.port.Lock()
	d.out(RegIER, IERTHRE)
	iir1 := d.in(RegIIR)
	d.out(RegIER, 0)
	d.out(RegIER, IERTHRE)
	iir := d.in(RegIIR)
	d.out(RegIER, 0)
	d.port.Unlock()
	d.bugTHRE = iir1&IIRNone == 0 && iir&IIRNone != 0
	// Initialise the UART: 8N1, OUT2, then the TXEN test.
	d.out(RegLCR, 0x03)
	d.port.Lock()
	d.out(RegMCR, MCRDTR|MCRRTS|MCROUT2)
	d.out(RegIER, IERTHRE)
	lsr := d.in(RegLSR)
	iir = d.in(RegIIR)
	d.out(RegIER, 0)
	d.bugTXEN = lsr&LSRTEMT != 0 && iir&IIRNone != 0
	d.port.Unlock()
	d.clearInterrupts()
	d.port.Lock()
	d.ier = IERRLS | IERRDA
	d.port.Unlock()
	d.setTermios()
}

func (d *linux8250) clearInterrupts() {
	d.in(RegLSR)
	d.in(RegData)
	d.in(RegIIR)
	d.in(RegMSR)
}

// setTermios is serial8250_do_set_termios for 8N1 at 9600 with the FIFO
// (trigger at 8 bytes).
func (d *linux8250) setTermios() {
	d.port.Lock()
	defer d.port.Unlock()
	d.out(RegIER, d.ier)
	d.out(RegLCR, 0x03|LCRDLAB)
	d.out(RegData, 12)
	d.out(RegIER, 0)
	d.out(RegLCR, 0x03)
	d.out(RegIIR, fcrFE)
	d.out(RegIIR, fcrFE|0x80)
	d.out(RegMCR, MCRDTR|MCRRTS|MCROUT2)
}

// shutdown is serial8250_do_shutdown (the last close).
func (d *linux8250) shutdown() {
	d.port.Lock()
	d.ier = 0
	d.out(RegIER, 0)
	d.port.Unlock()
	d.out(RegLCR, d.in(RegLCR)&^0x40)
	d.out(RegIIR, fcrFE)
	d.out(RegIIR, fcrFE|fcrRXReset|fcrTXReset)
	d.out(RegIIR, 0)
	d.in(RegData)
	d.pin.setMasked(true) // free_irq
	close(d.stop)
	<-d.done
}

// irqThread takes every delivered interrupt and runs the handler.
func (d *linux8250) irqThread() {
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
// until a pass finds nothing (PASS_LIMIT is never reached here).
func (d *linux8250) interrupt() {
	d.chain.Lock()
	defer d.chain.Unlock()
	for pass := 0; pass < 512; pass++ {
		if !d.handle() {
			return
		}
	}
}

// handle is serial8250_default_handle_irq + serial8250_handle_irq. IIR is
// read outside the port lock, as Linux does.
func (d *linux8250) handle() bool {
	iir := d.in(RegIIR)
	if iir&IIRNone != 0 {
		return false
	}
	d.port.Lock()
	defer d.port.Unlock()
	lsr := d.in(RegLSR)
	if lsr&(LSRDR|LSRBI) != 0 {
		for n := 0; n < 256 && lsr&(LSRDR|LSRBI) != 0; n++ {
			d.rx = append(d.rx, d.in(RegData))
			lsr = d.in(RegLSR)
		}
		d.rxCond.Broadcast()
	}
	d.in(RegMSR)
	if lsr&LSRTHRE != 0 && d.ier&IERTHRE != 0 {
		d.txChars()
	}
	return true
}

// txChars is serial8250_tx_chars (tx_loadsz 16); the port lock is held.
func (d *linux8250) txChars() {
	if len(d.xmit) == 0 {
		d.stopTx()
		return
	}
	for n := 0; n < 16 && len(d.xmit) > 0; n++ {
		d.out(RegData, d.xmit[0])
		d.xmit = d.xmit[1:]
	}
	if len(d.xmit) == 0 {
		d.stopTx()
	}
}

func (d *linux8250) stopTx() {
	if d.ier&IERTHRE != 0 {
		d.ier &^= IERTHRE
		d.out(RegIER, d.ier)
	}
}

// write is a tty write(2): queue the bytes and start_tx.
func (d *linux8250) write(p []byte) {
	d.port.Lock()
	defer d.port.Unlock()
	d.xmit = append(d.xmit, p...)
	if d.ier&IERTHRE == 0 {
		d.ier |= IERTHRE
		d.out(RegIER, d.ier)
		if d.bugTXEN && d.in(RegLSR)&LSRTHRE != 0 {
			d.txChars()
		}
	}
}

// readLine blocks until the flip buffer holds a line or stop closes.
func (d *linux8250) readLine(stop <-chan struct{}) ([]byte, bool) {
	d.port.Lock()
	defer d.port.Unlock()
	for {
		if i := bytes.IndexByte(d.rx, '\n'); i >= 0 {
			line := append([]byte(nil), d.rx[:i]...)
			d.rx = d.rx[i+1:]
			return line, true
		}
		select {
		case <-stop:
			return nil, false
		default:
		}
		d.rxCond.Wait()
	}
}

// lineBuffer collects what the guest transmits, line by line.
type lineBuffer struct {
	mu    sync.Mutex
	buf   []byte
	lines chan string
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	for {
		i := bytes.IndexByte(b.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		select {
		case b.lines <- string(b.buf[:i]):
		default:
		}
		b.buf = b.buf[i+1:]
	}
}

// hostFeed is vmm.SerialPort.feed: offer p to Receive until it is all
// taken, waiting for SpaceAvailable (or 50 ms) when the FIFO is full.
func hostFeed(u *UART, p []byte, stop <-chan struct{}) {
	for len(p) > 0 {
		p = p[u.Receive(p):]
		if len(p) > 0 {
			select {
			case <-u.SpaceAvailable():
			case <-time.After(50 * time.Millisecond):
			case <-stop:
				return
			}
		}
	}
}

// agentLineRun boots a UART, opens it with the Linux driver while the host
// is already sending requests, and runs trips request/reply round trips
// like guest-sync-delimited: the host resends a request that got no reply
// within resend (the open may eat bytes), and fails when no reply at all
// came for stall. It returns a description of a stall, or "".
func agentLineRun(seed uint64, trips int, resend, stall time.Duration) string {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pin := newEdgePin()
	out := &lineBuffer{lines: make(chan string, 1024)}
	u := New(pin, out)
	d := newLinux8250(u, pin)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(stop)
		d.port.Lock()
		d.rxCond.Broadcast()
		d.port.Unlock()
		wg.Wait()
	}()

	// The host: requests go to a feeder goroutine, as SerialPort does.
	reqs := make(chan []byte, 4)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case p := <-reqs:
				hostFeed(u, p, stop)
			case <-stop:
				return
			}
		}
	}()

	// The guest: the port opens after a random delay (the host is already
	// sending), then qemu-ga answers every line with its id.
	opened := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		d.startup()
		// Until qemu-ga's tcsetattr makes the line raw, the default
		// termios echoes what arrives: transmission while receiving.
		echoUntil := time.Now().Add(time.Duration(rng.IntN(2000)) * time.Microsecond)
		for time.Now().Before(echoUntil) {
			d.port.Lock()
			echo := append([]byte(nil), d.rx...)
			d.rx = d.rx[:0]
			d.port.Unlock()
			if len(echo) > 0 {
				d.write(echo)
			}
			time.Sleep(50 * time.Microsecond)
		}
		d.setTermios() // qemu-ga's tcsetattr
		close(opened)
		for {
			line, ok := d.readLine(stop)
			if !ok {
				d.shutdown()
				return
			}
			if i := bytes.LastIndexByte(line, 'Q'); i >= 0 {
				d.write(append([]byte("R"+string(line[i+1:])), '\n'))
			}
		}
	}()

	// Until the port is open and one reply came back, bytes may be lost
	// (the open empties the FIFO and reads RBR) and requests are resent;
	// from then on nothing may be lost, so nothing is resent and a request
	// without a reply is a stalled line.
	settled := false
	for id := 1; id <= trips; id++ {
		want := "R" + strconv.Itoa(id)
		req := []byte("Q" + strconv.Itoa(id) + "\n")
		reqs <- req
		start := time.Now()
		retry := time.NewTimer(resend)
		for got := false; !got; {
			select {
			case l := <-out.lines:
				got = l == want
			case <-retry.C:
				if time.Since(start) < stall {
					if !settled {
						reqs <- req
					}
					retry.Reset(resend)
					continue
				}
				select {
				case <-opened:
				default:
					return fmt.Sprintf("seed %#x: the guest never finished opening the port in %v", seed, stall)
				}
				d.port.Lock()
				flip, xmit := len(d.rx), len(d.xmit)
				d.port.Unlock()
				return fmt.Sprintf("seed %#x: round trip %d/%d got no reply in %v: UART %+v, line high %v, edges lost while masked %d, THRE bug %v, TXEN bug %v, %d bytes in the flip buffer, %d waiting to be sent",
					seed, id, trips, stall, u.State(), pin.level(), pin.lostCount(), d.bugTHRE, d.bugTXEN, flip, xmit)
			}
		}
		retry.Stop()
		select {
		case <-opened:
			settled = true
		default:
		}
		if rng.IntN(4) == 0 {
			time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
		}
	}
	return ""
}

func (p *edgePin) level() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.high
}

func (p *edgePin) lostCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lost
}

// TestLinuxAgentLine runs the agent line as Linux and qemu-ga drive it
// right after boot, many times with different timing: the line must never
// stop draining (issue 12 #18).
func TestLinuxAgentLine(t *testing.T) {
	runs := 200
	if testing.Short() {
		runs = 40
	}
	base := rand.Uint64()
	t.Logf("seeds %#x + 0..%d", base, runs-1)
	for i := 0; i < runs; i++ {
		if msg := agentLineRun(base+uint64(i), 50, 20*time.Millisecond, 2*time.Second); msg != "" {
			t.Fatal(msg)
		}
	}
}
