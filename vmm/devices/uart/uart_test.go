package uart

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeLine records the level changes the UART drives.
type fakeLine struct {
	mu     sync.Mutex
	high   bool
	rises  int
	levels []bool
}

func (l *fakeLine) SetLevel(high bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if high && !l.high {
		l.rises++
	}
	l.high = high
	if len(l.levels) < 1024 {
		l.levels = append(l.levels, high)
	}
}

func (l *fakeLine) level() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.high
}

func (l *fakeLine) riseCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rises
}

func rd(u *UART, off uint16) uint8 {
	var b [1]byte
	u.Read(off, b[:])
	return b[0]
}

func wr(u *UART, off uint16, v uint8) { u.Write(off, []byte{v}) }

func newTest(t *testing.T) (*UART, *fakeLine, *bytes.Buffer) {
	t.Helper()
	l := &fakeLine{}
	out := &bytes.Buffer{}
	return New(l, out), l, out
}

// TestPowerOn proves the reset values Linux's probe reads: LSR 0x60, IIR
// "none", MSR with the host side connected, IER 0.
func TestPowerOn(t *testing.T) {
	u, l, _ := newTest(t)
	for _, tc := range []struct {
		name string
		off  uint16
		want uint8
	}{
		{"IER", RegIER, 0},
		{"IIR", RegIIR, IIRNone},
		{"LCR", RegLCR, 0},
		{"MCR", RegMCR, 0},
		{"LSR", RegLSR, LSRTHRE | LSRTEMT},
		{"MSR", RegMSR, MSRDCD | MSRDSR | MSRCTS},
		{"SCR", RegSCR, 0},
	} {
		if got := rd(u, tc.off); got != tc.want {
			t.Errorf("%s = %#02x, want %#02x", tc.name, got, tc.want)
		}
	}
	if l.level() {
		t.Error("interrupt line high at power-on")
	}
}

// TestDLAB proves offsets 0 and 1 are DLL/DLM while LCR.DLAB is set (no
// byte is transmitted, IER is untouched) and RBR/THR/IER otherwise.
func TestDLAB(t *testing.T) {
	u, _, out := newTest(t)
	wr(u, RegLCR, LCRDLAB|0x03)
	wr(u, RegData, 0x01) // DLL: 115200 baud
	wr(u, RegIER, 0x02)  // DLM
	if got := rd(u, RegData); got != 0x01 {
		t.Errorf("DLL = %#02x, want 0x01", got)
	}
	if got := rd(u, RegIER); got != 0x02 {
		t.Errorf("DLM = %#02x, want 0x02", got)
	}
	if out.Len() != 0 {
		t.Errorf("DLL write transmitted %q", out.Bytes())
	}
	wr(u, RegLCR, 0x03)
	if got := rd(u, RegIER); got != 0 {
		t.Errorf("IER after DLAB writes = %#02x, want 0", got)
	}
	wr(u, RegData, 'A')
	if out.String() != "A" {
		t.Errorf("THR write sent %q, want \"A\"", out.String())
	}
	wr(u, RegLCR, LCRDLAB)
	if got := rd(u, RegData); got != 0x01 {
		t.Errorf("DLL changed by THR write: %#02x", got)
	}
	if s := u.State(); s.DLL != 1 || s.DLM != 2 || s.LCR != LCRDLAB {
		t.Errorf("state DLL/DLM/LCR = %#x/%#x/%#x", s.DLL, s.DLM, s.LCR)
	}
}

// TestIIRPriority proves the four sources are reported in priority order
// (line status > received data > THR empty > modem status), each cleared by
// its own action, with the FIFO bits 0xC0 while FCR.FE is set.
func TestIIRPriority(t *testing.T) {
	u, l, _ := newTest(t)
	wr(u, RegIIR, fcrFE)
	// Loopback, fill the FIFO and overrun it: line status + data.
	wr(u, RegMCR, MCRLoop)
	for i := 0; i <= RXFIFOSize; i++ {
		wr(u, RegData, byte(i))
	}
	rd(u, RegMSR) // clear the deltas entering loopback made
	wr(u, RegMCR, MCRLoop|MCRDTR)
	wr(u, RegIER, IERRDA|IERTHRE|IERRLS|IERMS)
	steps := []struct {
		name  string
		want  uint8
		clear func()
	}{
		{"line status", IIRFIFO | IIRRLS, func() { rd(u, RegLSR) }},
		{"received data", IIRFIFO | IIRRDA, func() {
			for rd(u, RegLSR)&LSRDR != 0 {
				rd(u, RegData)
			}
		}},
		{"THR empty", IIRFIFO | IIRTHRE, func() {}}, // reading IIR clears it
		{"modem status", IIRFIFO | IIRMS, func() { rd(u, RegMSR) }},
		{"none", IIRFIFO | IIRNone, func() {}},
	}
	for _, s := range steps {
		if !l.level() != (s.want&IIRNone != 0) {
			t.Errorf("%s: line level %v", s.name, l.level())
		}
		if got := rd(u, RegIIR); got != s.want {
			t.Fatalf("%s: IIR = %#02x, want %#02x", s.name, got, s.want)
		}
		s.clear()
	}
	if l.level() {
		t.Error("line still high with no source pending")
	}
}

// TestTHREInterrupt proves the THR-empty arming rules Linux relies on,
// including the 8250 driver's THRE test at startup.
func TestTHREInterrupt(t *testing.T) {
	t.Run("8250 THRE test", func(t *testing.T) {
		u, _, _ := newTest(t)
		wr(u, RegIER, IERTHRE)
		iir1 := rd(u, RegIIR)
		wr(u, RegIER, 0)
		wr(u, RegIER, IERTHRE)
		iir := rd(u, RegIIR)
		wr(u, RegIER, 0)
		// Linux sets UART_BUG_THRE (and falls back to polling) if
		// iir1 says pending and iir says not.
		if iir1&IIRNone != 0 || iir&IIRNone != 0 {
			t.Errorf("iir1 = %#02x, iir = %#02x: THRE not reasserted by toggling IER", iir1, iir)
		}
	})
	t.Run("IIR read clears, THR write rearms", func(t *testing.T) {
		u, l, out := newTest(t)
		wr(u, RegIER, IERTHRE)
		if !l.level() || l.riseCount() != 1 {
			t.Fatalf("ETBEI with THR empty: line %v, rises %d", l.level(), l.riseCount())
		}
		if got := rd(u, RegIIR); got != IIRTHRE {
			t.Fatalf("IIR = %#02x, want THRE", got)
		}
		if l.level() {
			t.Fatal("line high after IIR read cleared THRE")
		}
		if got := rd(u, RegIIR); got != IIRNone {
			t.Fatalf("second IIR read = %#02x, want none", got)
		}
		wr(u, RegData, 'x')
		if out.String() != "x" || !l.level() || l.riseCount() != 2 {
			t.Fatalf("THR write: out %q line %v rises %d", out.String(), l.level(), l.riseCount())
		}
		// More bytes while pending: no new edge needed, still pending.
		wr(u, RegData, 'y')
		if l.riseCount() != 2 || rd(u, RegIIR) != IIRTHRE {
			t.Fatal("THRE not pending after second write")
		}
	})
	t.Run("ETBEI clear disarms", func(t *testing.T) {
		u, l, _ := newTest(t)
		wr(u, RegIER, IERTHRE)
		wr(u, RegIER, 0)
		if l.level() || u.State().THREPending {
			t.Fatal("THRE still pending after clearing ETBEI")
		}
		// Unchanged ETBEI does not rearm.
		wr(u, RegIER, IERTHRE)
		rd(u, RegIIR)
		wr(u, RegIER, IERTHRE|IERRDA)
		if got := rd(u, RegIIR); got != IIRNone {
			t.Fatalf("rewriting IER with ETBEI unchanged rearmed THRE: IIR %#02x", got)
		}
	})
}

// TestRXFIFO proves the FIFO's capacity (64 with FIFOs on, 1 without),
// that Receive reports what it took, the received-data interrupt, the
// SpaceAvailable signal, and that changing FCR.FE or RX reset empties it.
func TestRXFIFO(t *testing.T) {
	u, l, _ := newTest(t)
	wr(u, RegIER, IERRDA)
	if n := u.Receive([]byte("ab")); n != 1 {
		t.Fatalf("Receive with FIFOs off took %d bytes, want 1", n)
	}
	if !l.level() || rd(u, RegIIR) != IIRRDA {
		t.Fatal("no received-data interrupt")
	}
	wr(u, RegIIR, fcrFE) // enabling the FIFO empties it
	if rd(u, RegLSR)&LSRDR != 0 || l.level() {
		t.Fatal("FIFO enable did not empty the receiver")
	}
	<-u.SpaceAvailable() // the reset signalled
	in := make([]byte, 100)
	for i := range in {
		in[i] = byte(i)
	}
	if n := u.Receive(in); n != RXFIFOSize {
		t.Fatalf("Receive took %d, want %d", n, RXFIFOSize)
	}
	if n := u.Receive(in); n != 0 {
		t.Fatalf("Receive into full FIFO took %d", n)
	}
	if rd(u, RegLSR)&LSROE != 0 {
		t.Fatal("host Receive caused an overrun")
	}
	select {
	case <-u.SpaceAvailable():
		t.Fatal("SpaceAvailable signalled while full")
	default:
	}
	if got := rd(u, RegData); got != 0 {
		t.Fatalf("first byte %d, want 0", got)
	}
	select {
	case <-u.SpaceAvailable():
	default:
		t.Fatal("SpaceAvailable not signalled after a read")
	}
	if n := u.Receive(in[64:]); n != 1 {
		t.Fatalf("Receive after one read took %d, want 1", n)
	}
	for i := 1; i < RXFIFOSize; i++ {
		if got := rd(u, RegData); got != byte(i) {
			t.Fatalf("byte %d = %d", i, got)
		}
	}
	if got := rd(u, RegData); got != 64 {
		t.Fatalf("last byte = %d, want 64", got)
	}
	if rd(u, RegLSR)&LSRDR != 0 || l.level() {
		t.Fatal("DR or interrupt still set with empty FIFO")
	}
	if got := rd(u, RegData); got != 64 {
		t.Fatalf("empty RBR read = %d, want the last byte 64", got)
	}
	u.Receive([]byte("zz"))
	wr(u, RegIIR, fcrFE|fcrRXReset)
	if len(u.State().RX) != 0 {
		t.Fatal("RX reset left bytes")
	}
}

// TestOverrun proves a byte arriving at a full FIFO (possible only in
// loopback) is lost, sets LSR.OE and raises a line-status interrupt, and
// that reading LSR clears OE.
func TestOverrun(t *testing.T) {
	u, l, _ := newTest(t)
	wr(u, RegIIR, fcrFE)
	wr(u, RegMCR, MCRLoop)
	wr(u, RegIER, IERRLS)
	for i := 0; i < RXFIFOSize; i++ {
		wr(u, RegData, byte(i))
	}
	if l.level() || rd(u, RegLSR)&LSROE != 0 {
		t.Fatal("overrun before the FIFO was full")
	}
	wr(u, RegData, 0xEE)
	if !l.level() {
		t.Fatal("no line-status interrupt on overrun")
	}
	if got := rd(u, RegLSR); got&LSROE == 0 {
		t.Fatalf("LSR %#02x without OE", got)
	}
	if rd(u, RegLSR)&LSROE != 0 || l.level() {
		t.Fatal("LSR read did not clear OE")
	}
	if len(u.State().RX) != RXFIFOSize {
		t.Fatal("FIFO content changed by the overrunning byte")
	}
}

// TestLoopback proves MCR.LOOP routes THR to the receiver instead of out,
// maps the modem outputs onto MSR (Linux's "MCR=LOOP|OUT2|RTS reads
// MSR=DCD|CTS" check), reports deltas, and disconnects the host receiver.
func TestLoopback(t *testing.T) {
	u, l, out := newTest(t)
	wr(u, RegMCR, MCRLoop|MCROUT2|MCRRTS)
	if got := rd(u, RegMSR) & 0xF0; got != MSRDCD|MSRCTS {
		t.Fatalf("loopback MSR lines = %#02x, want 0x90", got)
	}
	wr(u, RegMCR, MCRLoop|0x0F)
	if got := rd(u, RegMSR); got != 0xF0|MSRDDSR {
		t.Fatalf("MSR after raising all outputs = %#02x, want 0xF2 (only DSR changed)", got)
	}
	wr(u, RegIER, IERMS)
	wr(u, RegMCR, MCRLoop) // RI falls: TERI; DCD, DSR, CTS change
	if !l.level() || rd(u, RegIIR) != IIRMS {
		t.Fatal("no modem-status interrupt")
	}
	if got := rd(u, RegMSR); got != MSRTERI|MSRDDCD|MSRDDSR|MSRDCTS {
		t.Fatalf("MSR = %#02x, want deltas 0x0F and no lines", got)
	}
	wr(u, RegIER, 0)
	wr(u, RegData, 'L')
	if out.Len() != 0 {
		t.Fatalf("loopback byte reached out: %q", out.Bytes())
	}
	if rd(u, RegLSR)&LSRDR == 0 || rd(u, RegData) != 'L' {
		t.Fatal("loopback byte not received")
	}
	if n := u.Receive([]byte("h")); n != 0 {
		t.Fatal("host byte accepted in loopback")
	}
	for len(u.SpaceAvailable()) > 0 {
		<-u.SpaceAvailable()
	}
	wr(u, RegMCR, 0)
	select {
	case <-u.SpaceAvailable():
	default:
		t.Fatal("leaving loopback did not signal SpaceAvailable")
	}
	if got := rd(u, RegMSR) & 0xF0; got != msrConnected {
		t.Fatalf("MSR lines after loopback = %#02x", got)
	}
}

// TestLinuxAutoconfig replays the register dialogue of Linux 6.1's 8250
// autoconfig() and autoconfig_16550a() and checks it concludes "16550A".
func TestLinuxAutoconfig(t *testing.T) {
	u, _, _ := newTest(t)
	// Scratch test: IER must read back what was written (low nibble).
	wr(u, RegIER, 0)
	s1 := rd(u, RegIER)
	wr(u, RegIER, 0x0F)
	s2 := rd(u, RegIER)
	wr(u, RegIER, 0)
	if s1&0x0F != 0 || s2&0x0F != 0x0F {
		t.Fatalf("scratch test: %#02x %#02x", s1, s2)
	}
	// FIFO probe: IIR bits 7:6 == 3 means 16550A family.
	wr(u, RegIIR, fcrFE)
	if got := rd(u, RegIIR) >> 6; got != 3 {
		t.Fatalf("IIR>>6 = %d, want 3", got)
	}
	// LCR=0xBF: EFR (offset 2) must not read 0 or it is a 16650.
	wr(u, RegLCR, 0xBF)
	if rd(u, RegIIR) == 0 {
		t.Fatal("reads as having an EFR")
	}
	// NS16550 test: EXCR1 (offset 2 with LCR 0xE0) must not follow MCR.LOOP.
	wr(u, RegLCR, 0)
	st1 := rd(u, RegMCR)
	wr(u, RegLCR, 0xE0)
	st2 := rd(u, RegIIR)
	if (st2^st1)&MCRLoop == 0 {
		wr(u, RegLCR, 0)
		wr(u, RegMCR, st1^MCRLoop)
		wr(u, RegLCR, 0xE0)
		st2 = rd(u, RegIIR)
		wr(u, RegLCR, 0)
		wr(u, RegMCR, st1)
		if (st2^st1)&MCRLoop != 0 {
			t.Fatal("detected as NS16550")
		}
	}
	// TI16750 test: IIR bit 5 must never be set.
	wr(u, RegLCR, 0)
	wr(u, RegIIR, fcrFE|0x20)
	a := rd(u, RegIIR) & 0xE0
	wr(u, RegIIR, 0)
	wr(u, RegLCR, LCRDLAB)
	wr(u, RegIIR, fcrFE|0x20)
	b := rd(u, RegIIR) & 0xE0
	wr(u, RegIIR, 0)
	wr(u, RegLCR, 0)
	if a != 0xC0 || b != 0xC0 {
		t.Fatalf("16750 probe: %#02x %#02x", a, b)
	}
	// XScale UUE bit (IER bit 6) must not stick.
	wr(u, RegIER, 0x40)
	if rd(u, RegIER)&0x40 != 0 {
		t.Fatal("IER bit 6 sticks")
	}
	// serial8250_do_startup's LSR safety check.
	if rd(u, RegLSR) == 0xFF {
		t.Fatal("LSR reads 0xFF")
	}
}

// TestUnknownAndWide proves bytes past offset 7 read 0xFF and are ignored
// on write, and that a wide access is split into byte accesses.
func TestUnknownAndWide(t *testing.T) {
	u, _, out := newTest(t)
	d := []byte{0, 0, 0, 0}
	u.Read(6, d)
	if want := []byte{msrConnected, 0, 0xFF, 0xFF}; !bytes.Equal(d, want) {
		t.Errorf("4-byte read at 6 = % x, want % x", d, want)
	}
	u.Read(0xFFFF, d[:2])
	if d[0] != 0xFF || d[1] != 0xFF {
		t.Errorf("read at 0xFFFF = % x, want ff ff (no wrap to offset 0)", d[:2])
	}
	u.Write(0xFFFF, []byte{'a', 'b'})
	u.Write(8, []byte{'c'})
	u.Write(0, []byte{'d', 0x0F}) // THR then IER
	if out.String() != "d" {
		t.Errorf("out = %q, want \"d\"", out.String())
	}
	if rd(u, RegIER) != 0x0F {
		t.Error("second byte of a 2-byte write did not reach IER")
	}
	u.Read(0, nil)
	u.Write(0, nil)
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("broken") }

// TestTxErrors proves writer errors are counted and do not disturb the UART.
func TestTxErrors(t *testing.T) {
	u := New(nil, errWriter{})
	wr(u, RegData, 'a')
	wr(u, RegData, 'b')
	if u.TxErrors() != 2 {
		t.Fatalf("TxErrors = %d, want 2", u.TxErrors())
	}
	if rd(u, RegLSR) != LSRTHRE|LSRTEMT {
		t.Fatal("LSR disturbed")
	}
}

// blockingWriter blocks until released, to show a slow writer does not
// stall Receive or register reads on other threads.
type blockingWriter struct{ release chan struct{} }

func (w blockingWriter) Write(p []byte) (int, error) { <-w.release; return len(p), nil }

func TestSlowWriterDoesNotHoldLock(t *testing.T) {
	w := blockingWriter{make(chan struct{})}
	u := New(nil, w)
	done := make(chan struct{})
	go func() { wr(u, RegData, 'a'); close(done) }()
	time.Sleep(10 * time.Millisecond)
	got := make(chan int)
	go func() { got <- u.Receive([]byte("x")); rd(u, RegLSR) }()
	select {
	case n := <-got:
		if n != 1 {
			t.Errorf("Receive = %d", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Receive blocked behind a slow writer")
	}
	close(w.release)
	<-done
}

// TestOutputOrder proves bytes from concurrent THR writers reach out in
// an order consistent with each writer's own order.
func TestOutputOrder(t *testing.T) {
	var mu sync.Mutex
	var got []byte
	u := New(nil, writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		got = append(got, p...)
		mu.Unlock()
		return len(p), nil
	}))
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				wr(u, RegData, byte(w<<6|i%64))
			}
		}(w)
	}
	wg.Wait()
	next := [4]int{}
	for _, b := range got {
		w := int(b >> 6)
		if int(b&63) != next[w]%64 {
			t.Fatalf("writer %d: byte %d out of order", w, b&63)
		}
		next[w]++
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestConcurrent hammers every entry point from several goroutines (run
// with -race) and checks the line level matches IIR afterwards.
func TestConcurrent(t *testing.T) {
	u, l, _ := newTest(t)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var b [1]byte
			for i := 0; i < 2000; i++ {
				switch (i + g) % 5 {
				case 0:
					u.Receive([]byte{byte(i)})
				case 1:
					u.Read(uint16(i%8), b[:])
				case 2:
					u.Write(uint16(i%8), []byte{byte(i * 7)})
				case 3:
					_ = u.SetState(u.State())
				case 4:
					select {
					case <-u.SpaceAvailable():
					default:
					}
				}
			}
		}(g)
	}
	wg.Wait()
	u.mu.Lock()
	pending := u.iirLocked()&IIRNone == 0
	u.mu.Unlock()
	if l.level() != pending {
		t.Errorf("line %v, IIR pending %v", l.level(), pending)
	}
}

// TestStateRoundTrip proves State/SetState carry every register, the FIFO
// and the THRE arming into a fresh UART, and the line is re-driven.
func TestStateRoundTrip(t *testing.T) {
	u, _, _ := newTest(t)
	wr(u, RegLCR, LCRDLAB)
	wr(u, RegData, 0x03)
	wr(u, RegIER, 0x01)
	wr(u, RegLCR, 0x1B)
	wr(u, RegIIR, fcrFE|0x80)
	wr(u, RegMCR, MCROUT2|MCRDTR)
	wr(u, RegSCR, 0x5A)
	wr(u, RegIER, IERRDA|IERTHRE)
	u.Receive([]byte("hello"))
	rd(u, RegData)
	s := u.State()

	u2, l2, _ := newTest(t)
	if err := u2.SetState(s); err != nil {
		t.Fatal(err)
	}
	if got := u2.State(); !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
	}
	if !l2.level() {
		t.Error("line not driven high for a restored pending interrupt")
	}
	for _, c := range "ello" {
		if got := rd(u2, RegData); got != byte(c) {
			t.Fatalf("restored FIFO byte %q, want %q", got, c)
		}
	}
	if err := u2.SetState(New(nil, nil).State()); err != nil {
		t.Fatalf("power-on state rejected: %v", err)
	}
}

// TestSetStateValidates proves impossible states are refused, unchanged.
func TestSetStateValidates(t *testing.T) {
	good := New(nil, nil).State()
	for _, tc := range []struct {
		name string
		mod  func(*State)
	}{
		{"IER high bits", func(s *State) { s.IER = 0x10 }},
		{"MCR high bits", func(s *State) { s.MCR = 0x20 }},
		{"FCR reset bits", func(s *State) { s.FCR = fcrRXReset }},
		{"FIFO too big with FIFOs off", func(s *State) { s.RX = []byte{1, 2}; s.LSR |= LSRDR }},
		{"FIFO too big", func(s *State) { s.FCR = fcrFE; s.RX = make([]byte, 65); s.LSR |= LSRDR }},
		{"DR without data", func(s *State) { s.LSR |= LSRDR }},
		{"data without DR", func(s *State) { s.RX = []byte{1} }},
		{"THRE clear", func(s *State) { s.LSR = LSRTEMT }},
		{"break", func(s *State) { s.LSR |= LSRBI }},
		{"MSR lines", func(s *State) { s.MSR = 0 }},
	} {
		s := good
		tc.mod(&s)
		u := New(nil, nil)
		wr(u, RegSCR, 0x77)
		if err := u.SetState(s); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
		if rd(u, RegSCR) != 0x77 {
			t.Errorf("%s: state changed by a refused SetState", tc.name)
		}
	}
}

// FuzzUARTRegisters applies a guest/host operation sequence decoded from
// the input and checks the model never panics or hangs, the FIFO never
// exceeds its capacity, LSR.DR matches the FIFO, the line level matches IIR,
// and State is always accepted by SetState.
func FuzzUARTRegisters(f *testing.F) {
	f.Add([]byte{0x01, 0x03, 0x80, 0x01, 0x00, 0x01, 0x01, 0x03, 0x03, 0x01, 0x01, 0x0F, 0x00, 0x02})
	f.Add([]byte{0x01, 0x02, 0x01, 0x01, 0x04, 0x10, 0x01, 0x00, 0x41, 0x00, 0x05, 0x00, 0x00, 0x00})
	f.Add([]byte{0xF0, 0x10, 0x01, 0x01, 0x07, 0x00, 0x02, 0x00, 0x05, 0xF1, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		l := &fakeLine{}
		u := New(l, &bytes.Buffer{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			runOps(t, u, l, in)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("operation sequence did not return")
		}
	})
}

// runOps decodes in as operations. Each starts with a kind byte: 0xF0-0xFF
// are host actions (Receive, State round trip, Reset), others are port
// accesses: bit 0 write, bits 1-3 size (1, 2, 4, 0, 3, 8, 1, 1), followed by
// an offset byte (0xFF means 0xFFFF) and, for writes, size value bytes.
func runOps(t *testing.T, u *UART, l *fakeLine, in []byte) {
	sizes := [8]int{1, 2, 4, 0, 3, 8, 1, 1}
	for len(in) >= 2 {
		kind, arg := in[0], in[1]
		in = in[2:]
		switch {
		case kind >= 0xF0:
			switch kind & 3 {
			case 0:
				n := int(arg) % 80
				if n > len(in) {
					n = len(in)
				}
				if got := u.Receive(in[:n]); got > n {
					t.Fatalf("Receive(%d bytes) = %d", n, got)
				}
				in = in[n:]
			case 1:
				if err := u.SetState(u.State()); err != nil {
					t.Fatalf("own state refused: %v", err)
				}
			case 2:
				u.Reset()
			case 3:
				select {
				case <-u.SpaceAvailable():
				default:
				}
			}
		default:
			off := uint16(arg)
			if arg == 0xFF {
				off = 0xFFFF
			}
			data := make([]byte, sizes[kind>>1&7])
			if kind&1 != 0 {
				n := copy(data, in)
				in = in[n:]
				u.Write(off, data)
			} else {
				u.Read(off, data)
			}
		}
		s := u.State()
		capacity := 1
		if s.FCR&fcrFE != 0 {
			capacity = RXFIFOSize
		}
		if len(s.RX) > capacity {
			t.Fatalf("FIFO holds %d bytes, capacity %d", len(s.RX), capacity)
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("state became invalid: %v", err)
		}
		u.mu.Lock()
		pending := u.iirLocked()&IIRNone == 0
		u.mu.Unlock()
		if l.level() != pending {
			t.Fatalf("line %v but IIR pending %v", l.level(), pending)
		}
	}
}

// TestReceiverStatus: the sentence a stalled host feeder logs tells a
// closed port from an unserviced interrupt.
func TestReceiverStatus(t *testing.T) {
	u, _, _ := newTest(t)
	u.Receive([]byte("x"))
	if s := u.ReceiverStatus(); !strings.Contains(s, "interrupt off (IER 0x00)") || !strings.Contains(s, "1 of 1 bytes") {
		t.Errorf("port never opened: %q", s)
	}
	wr(u, RegIER, IERRDA)
	if s := u.ReceiverStatus(); !strings.Contains(s, "has not serviced it") {
		t.Errorf("interrupt raised, not serviced: %q", s)
	}
	wr(u, RegMCR, MCRLoop)
	if s := u.ReceiverStatus(); !strings.Contains(s, "loopback") {
		t.Errorf("loopback: %q", s)
	}
}
