package acpipm

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Duration    { return time.Duration(c.ns.Load()) }
func (c *fakeClock) add(d time.Duration)   { c.ns.Add(int64(d)) }
func (c *fakeClock) set(d time.Duration)   { c.ns.Store(int64(d)) }
func (c *fakeClock) cfg(ext32 bool) Config { return Config{TimerExt32: ext32, Now: c.now} }

type fakeLine struct {
	mu      sync.Mutex
	high    bool
	changes int
}

func (l *fakeLine) SetLevel(high bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.high = high
	l.changes++
}

func (l *fakeLine) level() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.high
}

type sleeps struct {
	mu    sync.Mutex
	types []uint8
}

func (s *sleeps) on(t uint8) {
	s.mu.Lock()
	s.types = append(s.types, t)
	s.mu.Unlock()
}

func r16(p *PM, off uint16) uint16 {
	var b [2]byte
	p.Read(off, b[:])
	return binary.LittleEndian.Uint16(b[:])
}

func w16(p *PM, off uint16, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	p.Write(off, b[:])
}

func r32(p *PM, off uint16) uint32 {
	var b [4]byte
	p.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func newTest(t *testing.T, ext32 bool) (*PM, *fakeClock, *fakeLine, *sleeps) {
	t.Helper()
	clk := &fakeClock{}
	l := &fakeLine{}
	s := &sleeps{}
	p := New(clk.cfg(ext32), l, s.on)
	t.Cleanup(p.Close)
	return p, clk, l, s
}

// TestStatusW1C proves status bits are write-1-to-clear (writing 0 leaves
// them), bits with no meaning never read 1, and byte writes clear only
// their byte.
func TestStatusW1C(t *testing.T) {
	p, _, _, _ := newTest(t, true)
	p.PressPowerButton()
	p.RaiseRTC()
	p.SetWakeStatus()
	want := uint16(StsPWRBTN | StsRTC | StsWAK)
	if got := r16(p, OffsetSTS); got != want {
		t.Fatalf("STS = %#04x, want %#04x", got, want)
	}
	w16(p, OffsetSTS, 0)
	if r16(p, OffsetSTS) != want {
		t.Fatal("writing 0 cleared status")
	}
	w16(p, OffsetSTS, StsRTC)
	if got := r16(p, OffsetSTS); got != StsPWRBTN|StsWAK {
		t.Fatalf("after clearing RTC_STS: %#04x", got)
	}
	p.Write(OffsetSTS+1, []byte{0x80}) // high byte: WAK_STS only
	if got := r16(p, OffsetSTS); got != StsPWRBTN {
		t.Fatalf("after clearing WAK_STS by byte: %#04x", got)
	}
	w16(p, OffsetSTS, 0xFFFF) // ACPICA's acpi_hw_clear_acpi_status
	if r16(p, OffsetSTS) != 0 {
		t.Fatal("0xFFFF did not clear all")
	}
}

// TestSCIFollowsStatusAndEnable proves the SCI level equals
// (STS & EN) != 0 through every way either side changes.
func TestSCIFollowsStatusAndEnable(t *testing.T) {
	p, _, l, _ := newTest(t, true)
	steps := []struct {
		name string
		do   func()
		want bool
	}{
		{"status without enable", p.PressPowerButton, false},
		{"enable pending status", func() { w16(p, OffsetEN, EnPWRBTN) }, true},
		{"clear status", func() { w16(p, OffsetSTS, StsPWRBTN) }, false},
		{"status with enable", p.PressPowerButton, true},
		{"disable", func() { w16(p, OffsetEN, 0) }, false},
		{"RTC enabled by byte", func() { p.Write(OffsetEN+1, []byte{EnRTC >> 8}) }, false},
		{"RTC status", p.RaiseRTC, true},
		{"sleep button not enabled", func() { w16(p, OffsetSTS, StsRTC); p.PressSleepButton() }, false},
		{"wake status has no enable", func() { w16(p, OffsetEN, enMask); w16(p, OffsetSTS, 0xFFFF); p.SetWakeStatus() }, false},
		{"32-bit write over STS+EN", func() { p.PressSleepButton(); p.Write(OffsetSTS, []byte{0, 0, 0, 0}) }, false},
		{"reset", func() { w16(p, OffsetEN, EnSLPBTN); p.PressSleepButton(); p.Reset() }, false},
	}
	for _, s := range steps {
		s.do()
		if l.level() != s.want || p.SCILevel() != s.want {
			t.Fatalf("%s: SCI %v/%v, want %v", s.name, l.level(), p.SCILevel(), s.want)
		}
	}
	w16(p, OffsetEN, 0xFFFF)
	if got := r16(p, OffsetEN); got != enMask {
		t.Fatalf("EN = %#04x, want only %#04x", got, enMask)
	}
}

// TestControl proves SCI_EN always reads 1, SLP_EN and GBL_RLS read 0,
// SLP_TYP and BM_RLD are kept, and a write with SLP_EN calls onSleep with
// the type written (16-bit and high-byte writes), after the lock is
// released.
func TestControl(t *testing.T) {
	p, _, _, s := newTest(t, true)
	if got := r16(p, OffsetCNT); got != CntSCIEN {
		t.Fatalf("power-on CNT = %#04x", got)
	}
	w16(p, OffsetCNT, 0) // try to leave ACPI mode
	if r16(p, OffsetCNT)&CntSCIEN == 0 {
		t.Fatal("SCI_EN cleared")
	}
	w16(p, OffsetCNT, uint16(SleepTypeS3)<<CntSLPTYPShift|CntBMRLD|CntGBLRLS)
	if len(s.types) != 0 {
		t.Fatal("onSleep without SLP_EN")
	}
	if got := r16(p, OffsetCNT); got != uint16(SleepTypeS3)<<CntSLPTYPShift|CntBMRLD|CntSCIEN {
		t.Fatalf("CNT = %#04x", got)
	}
	w16(p, OffsetCNT, uint16(SleepTypeS3)<<CntSLPTYPShift|CntSLPEN)
	p.Write(OffsetCNT+1, []byte{byte((uint16(SleepTypeS5)<<CntSLPTYPShift | CntSLPEN) >> 8)})
	if len(s.types) != 2 || s.types[0] != SleepTypeS3 || s.types[1] != SleepTypeS5 {
		t.Fatalf("onSleep calls %v, want [3 5]", s.types)
	}
	if r16(p, OffsetCNT)&CntSLPEN != 0 {
		t.Fatal("SLP_EN reads 1")
	}
	// onSleep runs outside the lock: it may read the block.
	var q *PM
	done := make(chan uint16, 1)
	q = New(DefaultConfig(), nil, func(uint8) { done <- r16(q, OffsetSTS) })
	defer q.Close()
	go w16(q, OffsetCNT, CntSLPEN)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("deadlock: onSleep called under the lock")
	}
	New(Config{}, nil, nil).Write(OffsetCNT, []byte{0, CntSLPEN >> 8}) // nil onSleep
}

// TestTimer proves the PM timer counts at 3.579545 MHz from the monotonic
// clock, never goes backwards between wraps, wraps at 24 or 32 bits, sets
// TMR_STS when its top bit changes, and reads in one sample when 32-bit.
func TestTimer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ext32 bool
		bits  uint
	}{{"24-bit", false, 24}, {"32-bit", true, 32}} {
		t.Run(tc.name, func(t *testing.T) {
			p, clk, _, _ := newTest(t, tc.ext32)
			if p.TimerExt32() != tc.ext32 {
				t.Fatal("TimerExt32")
			}
			if got := r32(p, OffsetTMR); got != 0 {
				t.Fatalf("timer at t=0: %d", got)
			}
			clk.set(time.Second)
			if got := r32(p, OffsetTMR); got != TimerHz {
				t.Fatalf("timer after 1 s: %d, want %d", got, TimerHz)
			}
			prev := r32(p, OffsetTMR)
			for i := 0; i < 1000; i++ {
				clk.add(time.Duration(i) * time.Microsecond)
				got := r32(p, OffsetTMR)
				if got < prev {
					t.Fatalf("timer went back: %d < %d", got, prev)
				}
				prev = got
			}
			period := time.Duration(float64(uint64(1)<<tc.bits) / TimerHz * float64(time.Second))
			w16(p, OffsetSTS, StsTMR)
			clk.set(period - time.Millisecond)
			before := r32(p, OffsetTMR)
			if r16(p, OffsetSTS)&StsTMR == 0 {
				t.Fatal("TMR_STS not set after the top bit rose")
			}
			w16(p, OffsetSTS, StsTMR)
			clk.set(period + time.Millisecond)
			after := r32(p, OffsetTMR)
			if after >= before || uint64(after) > 1e5 {
				t.Fatalf("no wrap at %d bits: %#x then %#x", tc.bits, before, after)
			}
			if r16(p, OffsetSTS)&StsTMR == 0 {
				t.Fatal("TMR_STS not set by the wrap")
			}
			if uint64(before) >= 1<<tc.bits {
				t.Fatalf("timer %#x exceeds %d bits", before, tc.bits)
			}
			var b [4]byte
			p.Read(OffsetTMR+3, b[:1])
			if !tc.ext32 && b[0] != 0 {
				t.Fatal("24-bit timer's top byte is not 0")
			}
		})
	}
	if ticks(time.Duration(1<<63-1)) == 0 {
		t.Fatal("ticks overflowed")
	}
}

// TestTimerInterrupt proves TMR_EN raises the SCI at the top-bit change
// without the guest polling (host timer), and Close stops that timer.
func TestTimerInterrupt(t *testing.T) {
	clk := &fakeClock{}
	l := &fakeLine{}
	p := New(Config{Now: clk.now}, l, nil) // 24-bit: top bit every ~2.3 s
	defer p.Close()
	half := time.Duration(uint64(1) << 23 * uint64(time.Second) / TimerHz)
	clk.set(half - 5*time.Millisecond)
	w16(p, OffsetEN, EnTMR)
	clk.set(half + time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for !l.level() {
		if time.Now().After(deadline) {
			t.Fatal("no SCI from TMR_EN")
		}
		time.Sleep(time.Millisecond)
	}
	p.Close()
	p.mu.Lock()
	armed := p.tmrTimer != nil
	p.mu.Unlock()
	if armed {
		t.Fatal("timer armed after Close")
	}
}

// TestWideAndUnknown proves the gap and bytes past the block read 0xFF,
// writes there and to the timer are ignored, and odd sizes are safe.
func TestWideAndUnknown(t *testing.T) {
	p, _, _, _ := newTest(t, true)
	b := make([]byte, 4)
	p.Read(4, b)
	if b[0] != CntSCIEN || b[1] != 0 || b[2] != 0xFF || b[3] != 0xFF {
		t.Fatalf("4 bytes at 4: % x", b)
	}
	p.Read(10, b)
	if b[2] != 0xFF || b[3] != 0xFF {
		t.Fatalf("past the end: % x", b)
	}
	before := p.State()
	p.Write(6, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	p.Write(0xFFFF, []byte{0xFF, 0xFF})
	p.Write(12, []byte{0xFF})
	if after := p.State(); after.STS != before.STS || after.EN != before.EN || after.CNT != before.CNT {
		t.Fatal("ignored writes changed state")
	}
	p.Read(0, nil)
	p.Write(0, nil)
	p.Read(0, make([]byte, 3))
}

// TestStateRoundTrip proves State/SetState carry STS, EN, CNT and the
// timer (which continues from the saved value), re-drive the SCI, and
// refuse a state from the other timer width or with impossible bits.
func TestStateRoundTrip(t *testing.T) {
	p, clk, _, _ := newTest(t, true)
	clk.set(3 * time.Second)
	w16(p, OffsetEN, EnPWRBTN|EnRTC)
	w16(p, OffsetCNT, uint16(SleepTypeS3)<<CntSLPTYPShift)
	p.PressPowerButton()
	p.SetWakeStatus()
	s := p.State()
	if s.Timer != 3*TimerHz {
		t.Fatalf("saved timer %d", s.Timer)
	}

	p2, clk2, l2, _ := newTest(t, true)
	clk2.set(100 * time.Second)
	if err := p2.SetState(s); err != nil {
		t.Fatal(err)
	}
	if got := p2.State(); got != s {
		t.Fatalf("round trip: got %+v want %+v", got, s)
	}
	if !l2.level() {
		t.Fatal("SCI not re-driven")
	}
	clk2.add(time.Second)
	if got := r32(p2, OffsetTMR); got != 4*TimerHz {
		t.Fatalf("timer after restore+1 s = %d, want %d", got, 4*TimerHz)
	}
	p24, _, _, _ := newTest(t, false)
	if err := p24.SetState(s); err == nil {
		t.Fatal("32-bit state accepted by a 24-bit timer")
	}
	for _, bad := range []State{
		{STS: 1 << 1, TimerExt32: true},
		{EN: 1 << 15, TimerExt32: true},
		{CNT: CntSLPEN, TimerExt32: true},
		{CNT: CntSCIEN, TimerExt32: true},
		{Timer: 1 << 24},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

// FuzzPM1Registers applies port accesses, clock steps and host events
// decoded from the input and checks: no panic or hang, the SCI level always
// equals (STS & EN) != 0, SCI_EN reads 1, SLP_EN reads 0, the timer fits its
// width, and State always validates.
func FuzzPM1Registers(f *testing.F) {
	f.Add([]byte{0x03, 0x02, 0x00, 0x01, 0xF1, 0x00, 0x03, 0x00, 0x00, 0x01, 0x03, 0x04, 0x00, 0x2C})
	f.Add([]byte{0x05, 0x00, 0x00, 0x00, 0x21, 0x07, 0x04, 0x08, 0xF0, 0xFF, 0x04, 0x08, 0xF2, 0x00})
	f.Add([]byte{0xF3, 0x00, 0x03, 0x02, 0x01, 0x05, 0x01, 0x00, 0xFF, 0x03, 0x04, 0x00, 0x34})
	f.Fuzz(func(t *testing.T, in []byte) {
		clk := &fakeClock{}
		l := &fakeLine{}
		ext32 := len(in) > 0 && in[0]&0x80 != 0
		var slept atomic.Int32
		p := New(clk.cfg(ext32), l, func(uint8) { slept.Add(1) })
		defer p.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			runOps(t, p, clk, l, in)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("operation sequence did not return")
		}
	})
}

func runOps(t *testing.T, p *PM, clk *fakeClock, l *fakeLine, in []byte) {
	sizes := [8]int{1, 2, 4, 0, 3, 8, 1, 1}
	for len(in) >= 2 {
		kind, arg := in[0], in[1]
		in = in[2:]
		switch {
		case kind >= 0xF0:
			switch kind & 7 {
			case 0:
				clk.add(time.Duration(arg) * time.Duration(arg) * 977 * time.Microsecond)
			case 1:
				p.PressPowerButton()
			case 2:
				p.PressSleepButton()
			case 3:
				p.RaiseRTC()
			case 4:
				p.SetWakeStatus()
			case 5:
				p.Reset()
			case 6, 7:
				if err := p.SetState(p.State()); err != nil {
					t.Fatalf("own state refused: %v", err)
				}
			}
		default:
			off := uint16(arg % 16)
			if arg == 0xFF {
				off = 0xFFFF
			}
			d := make([]byte, sizes[kind>>1&7])
			if kind&1 != 0 {
				n := copy(d, in)
				in = in[n:]
				p.Write(off, d)
			} else {
				p.Read(off, d)
			}
		}
		s := p.State()
		if err := s.Validate(); err != nil {
			t.Fatalf("state became invalid: %v", err)
		}
		// Under p.mu: the TMR_EN timer may move the SCI concurrently.
		p.mu.Lock()
		want := p.sts&p.en&enMask != 0
		line := l.level()
		r := p.regsLocked()
		p.mu.Unlock()
		if line != want {
			t.Fatalf("SCI %v but STS&EN = %#04x", line, s.STS&s.EN)
		}
		cnt := binary.LittleEndian.Uint16(r[OffsetCNT:])
		if cnt&CntSCIEN == 0 || cnt&CntSLPEN != 0 {
			t.Fatalf("CNT reads %#04x", cnt)
		}
		if !p.TimerExt32() && r[OffsetTMR+3] != 0 {
			t.Fatal("24-bit timer top byte set")
		}
	}
}
