package i8042

import (
	"reflect"
	"sync/atomic"
	"testing"
	"time"
)

func status(k *I8042) uint8 {
	var b [1]byte
	k.Read(OffsetCommand, b[:])
	return b[0]
}

func data(k *I8042) uint8 {
	var b [1]byte
	k.Read(OffsetData, b[:])
	return b[0]
}

func cmd(k *I8042, c uint8)   { k.Write(OffsetCommand, []byte{c}) }
func write(k *I8042, v uint8) { k.Write(OffsetData, []byte{v}) }

// command runs a controller command like Linux's __i8042_command: wait for
// IBF clear, write the command, its parameters, then read nres replies,
// each after OBF (bounded polls stand in for Linux's timeouts).
func command(t *testing.T, k *I8042, c uint8, params []byte, nres int) ([]byte, []uint8) {
	t.Helper()
	if status(k)&StatusIBF != 0 {
		t.Fatal("IBF set")
	}
	cmd(k, c)
	for _, p := range params {
		write(k, p)
	}
	var res []byte
	var sts []uint8
	for i := 0; i < nres; i++ {
		s := status(k)
		if s&StatusOBF == 0 {
			t.Fatalf("command %#02x: no reply %d (status %#02x)", c, i, s)
		}
		sts = append(sts, s)
		res = append(res, data(k))
	}
	return res, sts
}

// TestLinuxProbe replays Linux's i8042 probe (controller_check, selftest,
// controller_init, check_mux, check_aux up to the IRQ test, setup_kbd) and
// checks every answer it depends on.
func TestLinuxProbe(t *testing.T) {
	k := New(nil)
	flush := func() {
		for i := 0; status(k)&StatusOBF != 0; i++ {
			if i >= 16 {
				t.Fatal("i8042_flush: controller stuck")
			}
			data(k)
		}
	}
	if status(k) == 0xFF {
		t.Fatal("status reads 0xFF: Linux would say no controller")
	}
	flush()
	if r, _ := command(t, k, CmdSelfTest, nil, 1); r[0] != SelfTestOK {
		t.Fatalf("self test = %#02x", r[0])
	}
	a, _ := command(t, k, CmdReadCTR, nil, 1)
	b, _ := command(t, k, CmdReadCTR, nil, 1)
	if a[0] != b[0] {
		t.Fatal("unstable CTR")
	}
	if status(k)&StatusUnlock == 0 {
		t.Fatal("keylock active")
	}
	ctr := (a[0] | CTRKbdDis) &^ CTRKbdInt
	command(t, k, CmdWriteCTR, []byte{ctr}, 0)
	if r, _ := command(t, k, CmdReadCTR, nil, 1); r[0] != ctr {
		t.Fatalf("CTR write/read: %#02x != %#02x", r[0], ctr)
	}
	flush()
	// check_aux: the loopback echoes with the AUX bit.
	r, sts := command(t, k, CmdWriteAuxOut, []byte{0x5A}, 1)
	if r[0] != 0x5A || sts[0]&StatusAuxData == 0 {
		t.Fatalf("AUX loop: %#02x status %#02x", r[0], sts[0])
	}
	// toggle_aux(false) then (true), verified through the CTR.
	command(t, k, CmdDisableAux, nil, 0)
	if r, _ := command(t, k, CmdReadCTR, nil, 1); r[0]&CTRAuxDis == 0 {
		t.Fatal("AUX disable not visible in CTR")
	}
	command(t, k, CmdEnableAux, nil, 0)
	if r, _ := command(t, k, CmdReadCTR, nil, 1); r[0]&CTRAuxDis != 0 {
		t.Fatal("AUX enable not visible in CTR")
	}
	if r, _ := command(t, k, CmdTestAux, nil, 1); r[0] != InterfaceTestOK {
		t.Fatal("AUX test failed")
	}
	if r, _ := command(t, k, CmdTestKbd, nil, 1); r[0] != InterfaceTestOK {
		t.Fatal("KBD test failed")
	}
	// check_mux: three loopback bytes, the last must differ to be a MUX.
	for _, v := range []byte{0xF0, 0x56, 0xA4} {
		if r, _ := command(t, k, CmdWriteAuxOut, []byte{v}, 1); r[0] != v {
			t.Fatalf("loop %#02x returned %#02x", v, r[0])
		}
	}
	// setup_kbd: enable the port.
	ctr = (ctr &^ CTRKbdDis) | CTRKbdInt
	command(t, k, CmdWriteCTR, []byte{ctr}, 0)
	if r, _ := command(t, k, CmdReadCTR, nil, 1); r[0] != ctr {
		t.Fatal("KBD enable lost")
	}
	// atkbd sends GETID to the absent keyboard: nothing comes back.
	write(k, 0xF2)
	if status(k)&StatusOBF != 0 {
		t.Fatal("reply from an absent keyboard")
	}
}

// TestCommands proves each command's effect on CTR, output port and queue.
func TestCommands(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cmds    []uint8
		params  []uint8
		wantOut []uint8
		check   func(State) bool
	}{
		{"self test", []uint8{CmdSelfTest}, nil, []uint8{0x55}, nil},
		{"kbd test", []uint8{CmdTestKbd}, nil, []uint8{0x00}, nil},
		{"aux test", []uint8{CmdTestAux}, nil, []uint8{0x00}, nil},
		{"read CTR", []uint8{CmdReadCTR}, nil, []uint8{defaultCTR}, nil},
		{"disable kbd", []uint8{CmdDisableKbd}, nil, nil, func(s State) bool { return s.CTR&CTRKbdDis != 0 }},
		{"enable kbd", []uint8{CmdDisableKbd, CmdEnableKbd}, nil, nil, func(s State) bool { return s.CTR&CTRKbdDis == 0 }},
		{"disable aux", []uint8{CmdEnableAux, CmdDisableAux}, nil, nil, func(s State) bool { return s.CTR&CTRAuxDis != 0 }},
		{"enable aux", []uint8{CmdEnableAux}, nil, nil, func(s State) bool { return s.CTR&CTRAuxDis == 0 }},
		{"read output port", []uint8{CmdReadOutPort}, nil, []uint8{defaultOutPort}, nil},
		{"write output port", []uint8{CmdWriteOutPort}, []uint8{0x01}, nil, func(s State) bool { return s.OutPort == 0x01 }},
		{"A20 off", []uint8{CmdDisableA20}, nil, nil, func(s State) bool { return s.OutPort&OutPortA20 == 0 }},
		{"A20 on", []uint8{CmdDisableA20, CmdEnableA20}, nil, nil, func(s State) bool { return s.OutPort&OutPortA20 != 0 }},
		{"write kbd output", []uint8{CmdWriteKbdOut}, []uint8{0x1C}, []uint8{0x1C}, nil},
		{"write to aux device", []uint8{CmdWriteAux}, []uint8{0xFF}, nil, nil},
		{"new command cancels pending", []uint8{CmdWriteCTR, CmdReadCTR}, []uint8{0x00}, []uint8{defaultCTR}, func(s State) bool { return s.CTR == defaultCTR }},
		{"unknown command", []uint8{0x21, 0xC0, 0xE0}, nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resets := 0
			k := New(func() { resets++ })
			for _, c := range tc.cmds {
				cmd(k, c)
			}
			for _, p := range tc.params {
				write(k, p)
			}
			var out []uint8
			for status(k)&StatusOBF != 0 {
				out = append(out, data(k))
			}
			if !reflect.DeepEqual(out, tc.wantOut) {
				t.Errorf("replies % x, want % x", out, tc.wantOut)
			}
			if tc.check != nil && !tc.check(k.State()) {
				t.Errorf("state %+v", k.State())
			}
			if resets != 0 {
				t.Error("unexpected reset")
			}
		})
	}
}

// TestReset proves 0xFE, every even 0xF0-0xFE and an output port write
// with bit 0 clear call onReset exactly once each, outside the lock (the
// callback reads the controller, which would deadlock under it), and that
// odd pulse commands do not.
func TestReset(t *testing.T) {
	var n atomic.Int32
	var k *I8042
	k = New(func() {
		status(k) // re-enters: must not deadlock
		n.Add(1)
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		cmd(k, CmdReset)
		if n.Load() != 1 {
			t.Errorf("0xFE: %d resets", n.Load())
		}
		for c := 0xF0; c <= 0xFF; c++ {
			cmd(k, uint8(c))
		}
		if n.Load() != 1+8 {
			t.Errorf("0xF0-0xFF: %d resets, want 8 more", n.Load()-1)
		}
		cmd(k, CmdWriteOutPort)
		write(k, 0x02)
		if n.Load() != 10 {
			t.Error("output port bit 0 clear did not reset")
		}
		if k.State().OutPort&OutPortReset == 0 {
			t.Error("reset line left asserted")
		}
		cmd(k, CmdWriteOutPort)
		write(k, 0x03)
		if n.Load() != 10 {
			t.Error("output port write with bit 0 set reset")
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("deadlock: onReset called under the lock")
	}
	New(nil).Write(OffsetCommand, []byte{CmdReset}) // nil callback
}

// TestStatusAndData proves the status bits (OBF, AUX, SYS, CMD, unlocked),
// that an empty data port returns the last byte, the queue bound, and that
// offsets 1-3 read 0xFF.
func TestStatusAndData(t *testing.T) {
	k := New(nil)
	if got := status(k); got != StatusUnlock|StatusSys {
		t.Fatalf("power-on status %#02x", got)
	}
	cmd(k, CmdWriteAuxOut)
	if status(k)&StatusCmd == 0 {
		t.Fatal("CMD bit clear after a command")
	}
	write(k, 0x42)
	if got := status(k); got != StatusUnlock|StatusSys|StatusOBF|StatusAuxData {
		t.Fatalf("status with AUX byte %#02x", got)
	}
	if data(k) != 0x42 || data(k) != 0x42 {
		t.Fatal("empty data port does not return the last byte")
	}
	for i := 0; i < 20; i++ {
		cmd(k, CmdSelfTest)
	}
	if n := len(k.State().Out); n != OutputQueueSize {
		t.Fatalf("queue holds %d", n)
	}
	cmd(k, CmdWriteCTR)
	write(k, 0)
	if status(k)&StatusSys != 0 {
		t.Fatal("SYS does not follow CTR bit 2")
	}
	d := []byte{0, 0, 0, 0}
	k.Read(1, d[:3])
	if d[0] != 0xFF || d[1] != 0xFF || d[2] != 0xFF {
		t.Fatalf("offsets 1-3 read % x", d[:3])
	}
	before := k.State()
	k.Write(1, []byte{0xFE, 0xFE, 0xFE})
	k.Write(5, []byte{0xFE})
	if !reflect.DeepEqual(before, k.State()) {
		t.Fatal("writes to offsets 1-3 or 5 changed state")
	}
}

// TestStateRoundTrip proves State/SetState carry CTR, output port, pending
// command and the queue, and refuse impossible states.
func TestStateRoundTrip(t *testing.T) {
	k := New(nil)
	cmd(k, CmdWriteCTR)
	write(k, 0x47)
	cmd(k, CmdSelfTest)
	cmd(k, CmdWriteAuxOut)
	write(k, 0x99)
	data(k)
	cmd(k, CmdWriteOutPort)
	s := k.State()
	k2 := New(nil)
	if err := k2.SetState(s); err != nil {
		t.Fatal(err)
	}
	if got := k2.State(); !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
	}
	write(k2, 0x03) // the pending 0xD1 completes
	if k2.State().OutPort != 0x03 {
		t.Fatal("pending command lost")
	}
	for _, bad := range []State{
		{Pending: 0xAA, CmdLast: true, OutPort: 1},
		{Pending: 0x60, CmdLast: false, OutPort: 1},
		{Out: make([]OutByte, OutputQueueSize+1), OutPort: 1},
		{OutPort: 0},
	} {
		if err := k2.SetState(bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

// FuzzI8042Registers applies port accesses decoded from the input and
// checks: no panic or hang, the queue stays bounded, IBF never sets, and
// State always validates.
func FuzzI8042Registers(f *testing.F) {
	f.Add([]byte{0x01, 0x04, 0xAA, 0x00, 0x04, 0x00, 0x00, 0x01, 0x04, 0xD3, 0x01, 0x00, 0x5A})
	f.Add([]byte{0x01, 0x04, 0x60, 0x01, 0x00, 0x47, 0x01, 0x04, 0xFE, 0x03, 0x00, 0x11, 0x22})
	f.Fuzz(func(t *testing.T, in []byte) {
		var resets atomic.Int32
		k := New(func() { resets.Add(1) })
		done := make(chan struct{})
		go func() {
			defer close(done)
			runOps(t, k, in)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("operation sequence did not return")
		}
	})
}

func runOps(t *testing.T, k *I8042, in []byte) {
	sizes := [8]int{1, 2, 4, 0, 3, 8, 1, 1}
	for len(in) >= 2 {
		kind, arg := in[0], in[1]
		in = in[2:]
		switch {
		case kind >= 0xF0:
			switch kind & 1 {
			case 0:
				if err := k.SetState(k.State()); err != nil {
					t.Fatalf("own state refused: %v", err)
				}
			case 1:
				k.Reset()
			}
		default:
			off := uint16(arg % 8)
			if arg == 0xFF {
				off = 0xFFFF
			}
			d := make([]byte, sizes[kind>>1&7])
			if kind&1 != 0 {
				n := copy(d, in)
				in = in[n:]
				k.Write(off, d)
			} else {
				k.Read(off, d)
			}
		}
		s := k.State()
		if err := s.Validate(); err != nil {
			t.Fatalf("state became invalid: %v", err)
		}
		if status(k)&StatusIBF != 0 {
			t.Fatal("IBF set")
		}
	}
}
