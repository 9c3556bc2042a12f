package cmos

import (
	"reflect"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fakeLine struct {
	mu    sync.Mutex
	high  bool
	rises int
}

func (l *fakeLine) SetLevel(high bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if high && !l.high {
		l.rises++
	}
	l.high = high
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

func get(c *CMOS, r uint8) uint8 {
	c.Write(OffsetIndex, []byte{r})
	var b [1]byte
	c.Read(OffsetData, b[:])
	return b[0]
}

func set(c *CMOS, r, v uint8) {
	c.Write(OffsetIndex, []byte{r})
	c.Write(OffsetData, []byte{v})
}

// Thursday 29 February 2024, 13:45:56.25 UTC.
var t0 = time.Date(2024, 2, 29, 13, 45, 56, 250e6, time.UTC)

func newTest(t *testing.T, at time.Time) (*CMOS, *fakeClock, *fakeLine) {
	t.Helper()
	clk := &fakeClock{t: at}
	l := &fakeLine{}
	c := New(clk.now, l)
	t.Cleanup(c.Close)
	return c, clk, l
}

func readTime(c *CMOS) map[string]uint8 {
	return map[string]uint8{
		"sec": get(c, RegSeconds), "min": get(c, RegMinutes), "hour": get(c, RegHours),
		"dow": get(c, RegDayOfWeek), "day": get(c, RegDayOfMonth), "month": get(c, RegMonth),
		"year": get(c, RegYear), "century": get(c, RegCentury),
	}
}

// TestTimeEncoding proves the live time registers in BCD and binary, 24h
// and 12h (with the PM bit, midnight and noon as 12), and the century byte.
func TestTimeEncoding(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   time.Time
		regB uint8
		want map[string]uint8
	}{
		{"BCD 24h", t0, B24H, map[string]uint8{"sec": 0x56, "min": 0x45, "hour": 0x13, "dow": 0x05, "day": 0x29, "month": 0x02, "year": 0x24, "century": 0x20}},
		{"binary 24h", t0, B24H | BDM, map[string]uint8{"sec": 56, "min": 45, "hour": 13, "dow": 5, "day": 29, "month": 2, "year": 24, "century": 20}},
		{"BCD 12h PM", t0, 0, map[string]uint8{"sec": 0x56, "min": 0x45, "hour": 0x81, "dow": 0x05, "day": 0x29, "month": 0x02, "year": 0x24, "century": 0x20}},
		{"binary 12h noon", time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC), BDM, map[string]uint8{"sec": 0, "min": 0, "hour": 0x8C, "dow": 5, "day": 29, "month": 2, "year": 24, "century": 20}},
		{"BCD 12h midnight", time.Date(1999, 12, 31, 0, 30, 0, 0, time.UTC), 0, map[string]uint8{"sec": 0, "min": 0x30, "hour": 0x12, "dow": 0x06, "day": 0x31, "month": 0x12, "year": 0x99, "century": 0x19}},
		{"local zone ignored", t0.In(time.FixedZone("X", 5*3600)), B24H, map[string]uint8{"sec": 0x56, "min": 0x45, "hour": 0x13, "dow": 0x05, "day": 0x29, "month": 0x02, "year": 0x24, "century": 0x20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, _ := newTest(t, tc.at)
			set(c, RegB, tc.regB)
			if got := readTime(c); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %x\nwant %x", got, tc.want)
			}
		})
	}
}

// TestRegisters proves power-on A/B/D, that UIP never reads 1 even after
// a write with bit 7 set, that C and D are read-only, that plain RAM bytes
// are stored, and that the index port reads 0xFF and masks bit 7.
func TestRegisters(t *testing.T) {
	c, _, _ := newTest(t, t0)
	if got := get(c, RegA); got != defaultA {
		t.Errorf("A = %#02x", got)
	}
	if got := get(c, RegB); got != B24H {
		t.Errorf("B = %#02x", got)
	}
	if got := get(c, RegD); got != DVRT {
		t.Errorf("D = %#02x", got)
	}
	set(c, RegA, 0xFF)
	if got := get(c, RegA); got != 0x7F {
		t.Errorf("A after writing 0xFF = %#02x, want 0x7F (divider bits kept, UIP 0)", got)
	}
	set(c, RegC, 0xF0)
	set(c, RegD, 0x00)
	if get(c, RegC) != 0 || get(c, RegD) != DVRT {
		t.Error("C or D writable")
	}
	set(c, 0x40, 0xAB)
	if get(c, 0x40) != 0xAB {
		t.Error("RAM byte not stored")
	}
	c.Write(OffsetIndex, []byte{0x80 | 0x40})
	var b [1]byte
	c.Read(OffsetData, b[:])
	if b[0] != 0xAB || !c.State().NMIDisabled {
		t.Errorf("index with NMI bit: read %#02x, NMIDisabled %v", b[0], c.State().NMIDisabled)
	}
	c.Read(OffsetIndex, b[:])
	if b[0] != 0xFF {
		t.Errorf("index port read %#02x, want 0xFF", b[0])
	}
	w := []byte{0, 0, 0, 0}
	c.Write(OffsetIndex, []byte{0x40, 0x55, 0x11, 0x22}) // index then data, rest ignored
	c.Read(OffsetIndex, w)
	if w[0] != 0xFF || w[1] != 0x55 || w[2] != 0xFF || w[3] != 0xFF {
		t.Errorf("wide access: % x", w)
	}
}

// TestUIPNeverStuck replays Linux's mc146818_get_time: seconds, UIP check,
// every field, UIP and seconds again; it must finish in one pass while the
// clock ticks across a second and a year boundary.
func TestUIPNeverStuck(t *testing.T) {
	c, clk, _ := newTest(t, time.Date(2024, 12, 31, 23, 59, 59, 999e6, time.UTC))
	for i := 0; i < 3; i++ {
		passes := 0
		for {
			passes++
			if passes > 3 {
				t.Fatal("mc146818_get_time would spin")
			}
			if get(c, RegD)&0x40 != 0 {
				t.Fatal("register D bit 6 set: Linux refuses the RTC")
			}
			sec := get(c, RegSeconds)
			if get(c, RegA)&AUIP != 0 {
				continue
			}
			readTime(c)
			if get(c, RegA)&AUIP != 0 || get(c, RegSeconds) != sec {
				continue
			}
			break
		}
		clk.add(time.Millisecond)
	}
}

// TestSetTime proves a guest setting the clock with SET moves only the
// offset: reads follow the new time as the host clock advances, the host
// clock is untouched, and the offset survives a state round trip.
func TestSetTime(t *testing.T) {
	c, clk, _ := newTest(t, t0)
	set(c, RegB, BSET|B24H)
	if got := get(c, RegSeconds); got != 0x56 {
		t.Fatalf("latched seconds = %#02x", got)
	}
	clk.add(5 * time.Second)
	if got := get(c, RegSeconds); got != 0x56 {
		t.Fatalf("time moved while SET held: %#02x", got)
	}
	for r, v := range map[uint8]uint8{RegSeconds: 0x00, RegMinutes: 0x00, RegHours: 0x08, RegDayOfMonth: 0x01, RegMonth: 0x01, RegYear: 0x30, RegCentury: 0x20} {
		set(c, r, v)
	}
	set(c, RegB, B24H)
	want := time.Date(2030, 1, 1, 8, 0, 0, 0, time.UTC)
	if got := c.State().Offset; got != want.Sub(t0.Add(5*time.Second)) {
		t.Fatalf("offset %v", got)
	}
	clk.add(61 * time.Second)
	got := readTime(c)
	if got["min"] != 0x01 || got["sec"] != 0x01 || got["hour"] != 0x08 || got["year"] != 0x30 || got["dow"] != 0x03 {
		t.Fatalf("time 61 s after setting: %x", got)
	}
	if clk.now() != t0.Add(66*time.Second) {
		t.Fatal("host clock changed")
	}
	c2, _, _ := newTest(t, clk.now())
	if err := c2.SetState(c.State()); err != nil {
		t.Fatal(err)
	}
	if got := readTime(c2); got["min"] != 0x01 || got["year"] != 0x30 {
		t.Fatalf("restored time %x", got)
	}
}

// TestWriteWithoutSET proves a single time register write with SET clear
// changes that field only (Linux's rtc-cmos always uses SET, other guests
// may not), in binary 12h mode too.
func TestWriteWithoutSET(t *testing.T) {
	c, _, _ := newTest(t, t0)
	set(c, RegB, BDM) // binary, 12h
	set(c, RegHours, 0x80|3)
	got := readTime(c)
	if got["hour"] != 0x83 || got["min"] != 45 || got["sec"] != 56 || got["day"] != 29 {
		t.Fatalf("after writing 3 PM: %v", got)
	}
	set(c, RegB, BDM|B24H)
	if got := get(c, RegHours); got != 15 {
		t.Fatalf("24h hours = %d, want 15", got)
	}
	set(c, RegHours, 0x99) // nonsense: must not panic
	set(c, RegMonth, 0)
	set(c, RegCentury, 0xFF)
	readTime(c)
}

// TestAlarmFires proves a matching alarm with AIE sets AF and IRQF, raises
// IRQ 8, signals AlarmFired, that reading C clears the flags and lowers the
// line, and that the timer is re-armed for the next day's match.
func TestAlarmFires(t *testing.T) {
	c, clk, l := newTest(t, time.Date(2024, 3, 1, 6, 59, 59, 980e6, time.UTC))
	set(c, RegSecondsAlarm, 0x00)
	set(c, RegMinutesAlarm, 0x00)
	set(c, RegHoursAlarm, 0x07)
	set(c, RegB, B24H|BAIE)
	clk.add(20 * time.Millisecond) // the timer (20 ms) sees the alarm second
	select {
	case <-c.AlarmFired():
	case <-time.After(5 * time.Second):
		t.Fatal("alarm did not fire")
	}
	if !l.level() || !c.AlarmPending() {
		t.Fatalf("line %v AlarmPending %v", l.level(), c.AlarmPending())
	}
	if got := get(c, RegC); got != CIRQF|CAF {
		t.Fatalf("C = %#02x, want 0xA0", got)
	}
	if l.level() || c.AlarmPending() || get(c, RegC) != 0 {
		t.Fatal("reading C did not clear the flags and lower the line")
	}
	c.mu.Lock()
	next := c.target
	c.mu.Unlock()
	if want := time.Date(2024, 3, 2, 7, 0, 0, 0, time.UTC); !next.Equal(want) {
		t.Fatalf("re-armed for %v, want %v", next, want)
	}
}

// TestAlarmEnabledAfterMatch proves enabling AIE when AF is already set
// raises the line at once (IRQF follows flags & enables).
func TestAlarmEnabledAfterMatch(t *testing.T) {
	c, _, l := newTest(t, t0)
	c.mu.Lock()
	c.ram[RegC] = CAF
	c.mu.Unlock()
	set(c, RegB, B24H|BAIE)
	if !l.level() {
		t.Fatal("line low with AF and AIE")
	}
	set(c, RegB, B24H)
	if l.level() {
		t.Fatal("line high with AIE cleared")
	}
}

// TestUpdateInterrupt proves UIE produces UF each second through the timer.
func TestUpdateInterrupt(t *testing.T) {
	c, clk, l := newTest(t, time.Date(2024, 3, 1, 0, 0, 0, 990e6, time.UTC))
	set(c, RegB, B24H|BUIE)
	clk.add(10 * time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for l.riseCount() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no update interrupt")
		}
		time.Sleep(time.Millisecond)
	}
	if got := get(c, RegC); got != CIRQF|CUF {
		t.Fatalf("C = %#02x, want 0x90", got)
	}
	select {
	case <-c.AlarmFired():
		t.Fatal("update interrupt reported as an alarm")
	default:
	}
}

// TestCloseStopsTimer proves no interrupt arrives after Close.
func TestCloseStopsTimer(t *testing.T) {
	c, clk, l := newTest(t, time.Date(2024, 3, 1, 0, 0, 0, 990e6, time.UTC))
	set(c, RegB, B24H|BUIE)
	c.Close()
	clk.add(10 * time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	if l.riseCount() != 0 {
		t.Fatal("interrupt after Close")
	}
}

// TestNextAlarm proves the match search: don't-care fields, the next day,
// 12h alarm hours, and impossible alarms.
func TestNextAlarm(t *testing.T) {
	from := time.Date(2024, 3, 1, 10, 30, 15, 0, time.UTC)
	for _, tc := range []struct {
		name string
		s    alarmSpec
		want time.Time
		ok   bool
	}{
		{"every second", alarmSpec{-1, -1, -1}, from, true},
		{"sec 0 any min", alarmSpec{-1, -1, 0}, time.Date(2024, 3, 1, 10, 31, 0, 0, time.UTC), true},
		{"later today", alarmSpec{22, 0, 0}, time.Date(2024, 3, 1, 22, 0, 0, 0, time.UTC), true},
		{"tomorrow", alarmSpec{10, 30, 14}, time.Date(2024, 3, 2, 10, 30, 14, 0, time.UTC), true},
		{"this exact second", alarmSpec{10, 30, 15}, from, true},
		{"any hour min 5", alarmSpec{-1, 5, -1}, time.Date(2024, 3, 1, 11, 5, 0, 0, time.UTC), true},
		{"month end", alarmSpec{1, 0, 0}, time.Date(2024, 3, 2, 1, 0, 0, 0, time.UTC), true},
		{"invalid minute", alarmSpec{-1, 60, -1}, time.Time{}, false},
		{"invalid hour", alarmSpec{24, -1, -1}, time.Time{}, false},
	} {
		got, ok := nextAlarm(from, tc.s)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("%s: got %v %v, want %v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
	b := uint8(0) // BCD 12h
	if h := decodeHours(0x92, b); h != 12 {
		t.Errorf("12 PM = %d", h)
	}
	if h := decodeHours(0x12, b); h != 0 {
		t.Errorf("12 AM = %d", h)
	}
}

// TestStateRoundTrip proves State/SetState carry index, NMI bit, RAM,
// registers and offset; the restored line level and timer follow.
func TestStateRoundTrip(t *testing.T) {
	c, clk, _ := newTest(t, t0)
	set(c, 0x10, 0x42)
	set(c, RegHoursAlarm, 0xFF)
	set(c, RegB, BDM|BAIE)
	set(c, RegHours, 0x85)
	c.mu.Lock()
	c.ram[RegC] = CAF
	c.updateIRQLocked()
	c.mu.Unlock()
	c.Write(OffsetIndex, []byte{0x80 | 0x22})
	s := c.State()

	c2, _, l2 := newTest(t, clk.now())
	if err := c2.SetState(s); err != nil {
		t.Fatal(err)
	}
	if got := c2.State(); !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
	}
	if !l2.level() {
		t.Fatal("restored pending alarm did not raise the line")
	}
	c2.mu.Lock()
	armed := c2.timer != nil
	c2.mu.Unlock()
	if !armed {
		t.Fatal("restored AIE did not arm the timer")
	}
	for _, tc := range []struct {
		name string
		mod  func(*State)
	}{
		{"index", func(s *State) { s.Index = 0x80 }},
		{"UIP", func(s *State) { s.RAM[RegA] |= AUIP }},
		{"C low bits", func(s *State) { s.RAM[RegC] |= 1 }},
		{"IRQF without enable", func(s *State) { s.RAM[RegB] = B24H }},
		{"SET with UIE", func(s *State) { s.RAM[RegB] |= BSET | BUIE }},
		{"D stored", func(s *State) { s.RAM[RegD] = 0x80 }},
	} {
		bad := s
		tc.mod(&bad)
		if err := c2.SetState(bad); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// FuzzCMOSRegisters applies port accesses and clock steps decoded from the
// input and checks: no panic or hang, register A never shows UIP, D reads
// 0x80, the line level equals IRQF, and State always validates.
func FuzzCMOSRegisters(f *testing.F) {
	f.Add([]byte{0x01, 0x00, 0x0B, 0x01, 0x01, 0xA6, 0x01, 0x00, 0x00, 0x01, 0x01, 0x59, 0xF0, 0x05})
	f.Add([]byte{0x01, 0x00, 0x05, 0x01, 0x01, 0xC0, 0x01, 0x00, 0x0B, 0x01, 0x01, 0x32, 0xF0, 0x80, 0x00, 0x01})
	f.Fuzz(func(t *testing.T, in []byte) {
		clk := &fakeClock{t: t0}
		l := &fakeLine{}
		c := New(clk.now, l)
		defer c.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			runOps(t, c, clk, l, in)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("operation sequence did not return")
		}
	})
}

func runOps(t *testing.T, c *CMOS, clk *fakeClock, l *fakeLine, in []byte) {
	sizes := [8]int{1, 2, 4, 0, 3, 8, 1, 1}
	for len(in) >= 2 {
		kind, arg := in[0], in[1]
		in = in[2:]
		switch {
		case kind >= 0xF0:
			switch kind & 3 {
			case 0:
				clk.add(time.Duration(arg) * 97 * time.Millisecond)
			case 1:
				if err := c.SetState(c.State()); err != nil {
					t.Fatalf("own state refused: %v", err)
				}
			case 2:
				c.Reset()
			case 3:
				c.AlarmPending()
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
				c.Write(off, data)
			} else {
				c.Read(off, data)
			}
		}
		s := c.State()
		if err := s.Validate(); err != nil {
			t.Fatalf("state became invalid: %v", err)
		}
		c.mu.Lock()
		// Under c.mu: the event timer may change the line concurrently.
		a, irqf, line, d := c.readRegLocked(RegA), c.ram[RegC]&CIRQF != 0, c.lineHigh, c.readRegLocked(RegD)
		fake := l.level()
		c.mu.Unlock()
		if a&AUIP != 0 || d != DVRT {
			t.Fatalf("A %#02x D %#02x", a, d)
		}
		if line != irqf || fake != irqf {
			t.Fatalf("line %v/%v but IRQF %v", line, fake, irqf)
		}
	}
}
