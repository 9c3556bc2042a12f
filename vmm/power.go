package vmm

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/pmvm/pmvm/vmm/acpi"
	"github.com/pmvm/pmvm/vmm/kvm"
)

// Transition is one runstate change, for operators and timelines.
type Transition struct {
	From RunState      `json:"from"`
	To   RunState      `json:"to"`
	At   time.Time     `json:"at"`
	Took time.Duration `json:"took_ns"` // time spent in From
}

// setStateLocked moves to a new runstate and wakes everyone waiting on one.
// Caller holds m.mu.
func (m *Machine) setStateLocked(to RunState) {
	if !CanMove(m.runstate, to) {
		m.illegal++
		m.log.Error().Str("from", string(m.runstate)).Str("to", string(to)).Msg("runstate move the runstate machine does not allow (a pmvm bug)")
	}
	now := time.Now()
	m.last = Transition{From: m.runstate, To: to, At: now, Took: now.Sub(m.since)}
	m.runstate, m.since = to, now
	close(m.changed)
	m.changed = make(chan struct{})
	m.cond.Broadcast()
}

// IllegalTransitions counts runstate moves the runstate machine does not
// allow (see runstate.go); anything but 0 is a pmvm bug.
func (m *Machine) IllegalTransitions() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.illegal
}

// RunState returns the current runstate.
func (m *Machine) RunState() RunState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.runstate
}

// WaitRunState waits until the machine is in one of want, or ctx ends.
func (m *Machine) WaitRunState(ctx context.Context, want ...RunState) (RunState, error) {
	for {
		m.mu.Lock()
		cur, ch := m.runstate, m.changed
		m.mu.Unlock()
		for _, w := range want {
			if cur == w {
				return cur, nil
			}
		}
		if cur == StateStopped {
			return cur, fmt.Errorf("machine stopped while waiting for %v", want)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return cur, fmt.Errorf("machine still %s: %w", cur, ctx.Err())
		}
	}
}

// vcpuReset is a vCPU's state right after creation: what a PC's firmware
// would hand back to the OS after a reset.
type vcpuReset struct {
	regs  kvm.Regs
	sregs kvm.Sregs
	fpu   kvm.FPU
	lapic kvm.LAPICState
	mp    uint32
}

func captureReset(c *kvm.VCPU) (r vcpuReset, err error) {
	if r.regs, err = c.Regs(); err != nil {
		return r, err
	}
	if r.sregs, err = c.Sregs(); err != nil {
		return r, err
	}
	if r.fpu, err = c.FPU(); err != nil {
		return r, err
	}
	if r.lapic, err = c.LAPIC(); err != nil {
		return r, err
	}
	r.mp, err = c.MPState()
	return r, err
}

// enterS3 runs on the vCPU thread that wrote SLP_TYP=S3|SLP_EN: the machine
// becomes suspended and every vCPU parks outside KVM_RUN until Wake.
func (m *Machine) enterS3() {
	m.mu.Lock()
	if m.runstate != StateRunning {
		m.mu.Unlock()
		return
	}
	m.setStateLocked(StateSuspended)
	abandoned := m.wakeOnS3
	m.wakeOnS3 = ""
	m.mu.Unlock()
	m.log.Info().Msg("guest entered S3 (suspend to RAM)")
	m.kickAll()
	if abandoned != "" {
		go m.wakeLate(abandoned)
	}
}

// WakeOnSuspend says what an S3 entry from now on leads to. wake false: the
// guest stays in S3 (a suspend was asked for). wake true: the guest is woken
// at once, because the suspend pmvm asked for was given up on (why) and
// nothing else would ever wake it; a guest already in S3 is woken now.
// Either way it holds for the next S3 entry only.
func (m *Machine) WakeOnSuspend(wake bool, why string) {
	m.mu.Lock()
	if !wake {
		m.wakeOnS3 = ""
		m.mu.Unlock()
		return
	}
	if why == "" {
		why = "a suspend given up on"
	}
	suspended := m.runstate == StateSuspended
	if !suspended {
		m.wakeOnS3 = why
	}
	m.mu.Unlock()
	if suspended {
		go m.wakeLate(why)
	}
}

// wakeLate wakes a guest that reached S3 after its suspend was given up on.
func (m *Machine) wakeLate(why string) {
	m.log.Warn().Str("why", why).Msg("the guest reached S3 after pmvm gave up on its suspend: waking it, so that it is not left asleep")
	if err := m.Wake("late S3 after " + why); err != nil {
		m.log.Error().Err(err).Msg("could not wake the guest that reached S3 late: pmvm wakeup it")
	}
}

// park holds a vCPU thread while the machine is suspended. It returns false
// when the machine stops instead of waking.
func (m *Machine) park() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	gen := m.wakeGen
	m.parked++
	m.cond.Broadcast()
	for m.wakeGen == gen && !m.isStopping() {
		m.cond.Wait()
	}
	m.parked--
	return !m.isStopping()
}

func (m *Machine) shouldPark() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch m.runstate {
	case StateSuspended, StateWaking, StateSaving, StateSaved:
		return true
	}
	return false
}

// parkTimeout bounds how long Wake waits for the vCPUs to leave the guest
// after S3 entry; they are kicked, so this only trips on a host bug.
const parkTimeout = 5 * time.Second

// Wake brings a suspended guest back as firmware does after S3: devices in
// their reset state, PM1 WAK_STS set, every vCPU reset, the boot vCPU in real
// mode at the FACS waking vector, the others waiting for INIT/SIPI.
// why is logged ("operator", "rtc alarm").
func (m *Machine) Wake(why string) error {
	m.mu.Lock()
	if m.runstate != StateSuspended {
		st := m.runstate
		m.mu.Unlock()
		return fmt.Errorf("cannot wake: the machine is %s, not suspended", st)
	}
	deadline := time.Now().Add(parkTimeout)
	for m.parked < len(m.vcpus) {
		if time.Now().After(deadline) {
			m.mu.Unlock()
			return fmt.Errorf("cannot wake: only %d of %d vCPUs left the guest", m.parked, len(m.vcpus))
		}
		// cond has no timed wait: a short timer broadcast bounds the wait.
		t := time.AfterFunc(100*time.Millisecond, m.cond.Broadcast)
		m.cond.Wait()
		t.Stop()
	}
	m.setStateLocked(StateWaking)
	m.mu.Unlock()

	if err := m.resetForWake(); err != nil {
		m.stop(OutcomeError, err, "wake from S3 failed")
		return err
	}
	m.mu.Lock()
	if m.isStopping() { // stopped while waking: stay stopping
		m.mu.Unlock()
		return fmt.Errorf("cannot wake: the machine was stopped while waking")
	}
	m.wakeGen++
	m.setStateLocked(StateRunning)
	m.mu.Unlock()
	m.log.Info().Str("why", why).Msg("guest woken from S3")
	if m.onWake != nil {
		go m.onWake(why)
	}
	return nil
}

// OnWake sets a function run (in its own goroutine) after every wake from
// S3, e.g. to set the guest clock through its agent. Call before Run.
func (m *Machine) OnWake(f func(why string)) { m.onWake = f }

// wakingVector reads where the guest asked to be resumed, from the FACS.
func (m *Machine) wakingVector() (uint32, error) {
	if m.tables == nil {
		return 0, fmt.Errorf("no ACPI tables: the machine was never booted")
	}
	var b [8]byte
	if _, err := m.mem.ReadAt(b[:8], int64(m.tables.FACS+acpi.FACSXFirmwareWakingVectorOffset)); err != nil {
		return 0, err
	}
	if x := binary.LittleEndian.Uint64(b[:]); x != 0 {
		return 0, fmt.Errorf("the guest set a 64-bit waking vector (%#x); pmvm resumes only through the real-mode FirmwareWakingVector", x)
	}
	if _, err := m.mem.ReadAt(b[:4], int64(m.tables.FACS+acpi.FACSFirmwareWakingVectorOffset)); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint32(b[:4])
	if v == 0 || v >= 1<<20 {
		return 0, fmt.Errorf("the guest's FACS waking vector is %#x: not a real-mode address, the guest cannot be resumed", v)
	}
	return v, nil
}

func (m *Machine) resetForWake() error {
	vector, err := m.wakingVector()
	if err != nil {
		return err
	}
	for _, d := range m.devs {
		if d.wake != nil {
			d.wake()
		}
	}
	for i, c := range m.vcpus {
		r := m.resets[i]
		sregs := r.sregs
		regs := r.regs
		mp := uint32(kvm.MPStateUninitialized)
		if i == 0 {
			// Real mode at the vector: CS = vector>>4, IP = vector&0xf.
			sregs.CS.Selector = uint16(vector >> 4)
			sregs.CS.Base = uint64(vector &^ 0xf)
			regs.RIP = uint64(vector & 0xf)
			mp = kvm.MPStateRunnable
		}
		if err := c.SetSregs(sregs); err != nil {
			return err
		}
		if err := c.SetRegs(regs); err != nil {
			return err
		}
		if err := c.SetFPU(r.fpu); err != nil {
			return err
		}
		if err := c.SetLAPIC(r.lapic); err != nil {
			return err
		}
		if err := c.SetMPState(mp); err != nil {
			return err
		}
	}
	m.log.Debug().Str("vector", fmt.Sprintf("%#x", vector)).Msg("boot vCPU reset to the FACS waking vector")
	return nil
}
