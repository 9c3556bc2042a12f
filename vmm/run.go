package vmm

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pmvm/pmvm/vmm/kvm"
)

// Run starts one locked OS thread per vCPU and returns when the guest powers
// off or resets, the host stops it (ctx cancelled or Stop), or a vCPU fails.
func (m *Machine) Run(ctx context.Context) (Outcome, error) {
	m.mu.Lock()
	switch m.runstate {
	case StateCreated:
		m.setStateLocked(StateRunning)
	case StateSuspended:
		// Restored from a state file: the vCPUs start parked until Wake.
	default:
		m.mu.Unlock()
		return OutcomeError, fmt.Errorf("machine is %s, neither created nor restored", m.runstate)
	}
	m.started = time.Now()
	m.mu.Unlock()

	var wg sync.WaitGroup
	for _, c := range m.vcpus {
		wg.Add(1)
		go func(c *kvm.VCPU) {
			defer wg.Done()
			m.runVCPU(c)
		}(c)
	}
	go func() {
		select {
		case <-ctx.Done():
			m.stop(OutcomeStopped, nil, "host asked to stop")
		case <-m.stopping:
		}
	}()
	for _, d := range m.devs {
		if d.alarm != nil {
			go m.wakeOnAlarm(d.name(), d.alarm)
		}
	}
	wg.Wait()

	m.mu.Lock()
	defer m.mu.Unlock()
	m.setStateLocked(StateStopped)
	m.log.Info().Str("outcome", m.outcome.String()).Dur("uptime", time.Since(m.started)).
		Uint64("unhandled_port_accesses", m.bus.Unhandled()).Uint64("guest_log_lines_suppressed", m.guestLogs.suppressed.Load()).Msg("machine stopped")
	return m.outcome, m.stopErr
}

// Stop asks the machine to stop as if the host pulled the plug.
func (m *Machine) Stop() { m.stop(OutcomeStopped, nil, "stop requested") }

// stop records why the machine stops (the first reason wins) and gets every
// vCPU out of the guest. The flag is set before the kick: a vCPU always
// checks it after KVM_RUN returns. The closed stopping channel, not the
// runstate, says a stop was already asked for: a save or a wake in
// progress must not open the way to a second close.
func (m *Machine) stop(o Outcome, err error, why string) {
	m.mu.Lock()
	if m.isStopping() {
		m.mu.Unlock()
		return
	}
	m.outcome, m.stopErr = o, err
	close(m.stopping)
	m.setStateLocked(StateStopping)
	m.mu.Unlock()

	ev := m.log.Info()
	if err != nil {
		ev = m.log.Error().Err(err)
	}
	ev.Str("outcome", o.String()).Msg(why)
	m.kickAll()
}

func (m *Machine) isStopping() bool {
	select {
	case <-m.stopping:
		return true
	default:
		return false
	}
}

// runVCPU is the vCPU loop: enter the guest, handle the exit, repeat.
func (m *Machine) runVCPU(c *kvm.VCPU) {
	runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
	c.BindThread()
	defer c.UnbindThread()
	log := m.log.With().Int("vcpu", c.ID).Logger()

	for !m.isStopping() {
		if m.shouldPark() {
			if !m.park() {
				return
			}
			continue
		}
		reason, err := c.Run()
		if err != nil {
			m.stop(OutcomeError, err, "vCPU failed")
			return
		}
		switch reason {
		case kvm.ExitIntr, kvm.ExitHLT, kvm.ExitIRQWindowOpen:
			// Signal, or a halt the in-kernel irqchip let through: re-enter.
		case kvm.ExitIO:
			io, err := c.IO()
			if err != nil {
				m.stop(OutcomeError, err, "bad I/O exit")
				return
			}
			for i := 0; i < len(io.Data); i += io.Size {
				if io.Out {
					m.bus.Out(io.Port, io.Data[i:i+io.Size])
				} else {
					m.bus.In(io.Port, io.Data[i:i+io.Size])
				}
			}
		case kvm.ExitMMIO:
			mm := c.MMIO()
			if !mm.Write {
				for i := range mm.Data {
					mm.Data[i] = 0xff
				}
			}
			m.logMMIO.event(log.Debug()).Str("addr", fmt.Sprintf("%#x", mm.Addr)).Bool("write", mm.Write).Msg("MMIO to unmapped address")
		case kvm.ExitShutdown:
			logTripleFault(log, c)
			m.stop(OutcomeReset, nil, fmt.Sprintf("vCPU %d triple fault (shutdown)", c.ID))
		case kvm.ExitSystemEvent:
			switch t := c.SystemEventType(); t {
			case kvm.SystemEventShutdown:
				m.stop(OutcomePowerOff, nil, "system event: shutdown")
			case kvm.SystemEventReset:
				m.stop(OutcomeReset, nil, "system event: reset")
			default:
				m.stop(OutcomeError, fmt.Errorf("vCPU %d: system event %d (crash)", c.ID, t), "guest crashed")
			}
		case kvm.ExitInternalError:
			m.stop(OutcomeError, fmt.Errorf("vCPU %d: KVM internal error: %s%s", c.ID, c.InternalError(), m.regsDump(c)), "KVM internal error")
		case kvm.ExitFailEntry:
			m.stop(OutcomeError, fmt.Errorf("vCPU %d: KVM could not enter the guest (hardware reason %#x)%s", c.ID, c.FailEntryReason(), m.regsDump(c)), "entry failed")
		default:
			m.stop(OutcomeError, fmt.Errorf("vCPU %d: unexpected exit %s%s", c.ID, kvm.ExitName(reason), m.regsDump(c)), "unexpected exit")
		}
	}
}

// wakeOnAlarm wakes a suspended guest when a device's alarm fires (the CMOS
// RTC's), as the RTC wakes a PC from S3. An alarm while running is the
// guest's own business.
func (m *Machine) wakeOnAlarm(name string, alarm <-chan struct{}) {
	for {
		select {
		case <-m.stopping:
			return
		case <-alarm:
			if m.RunState() == StateSuspended {
				if err := m.Wake("rtc alarm"); err != nil {
					m.logAlarm.event(m.log.Error()).Err(err).Str("device", name).Msg("RTC alarm could not wake the guest")
				}
			}
		}
	}
}

// regsDump describes where a failing vCPU was, for the error message.
func (m *Machine) regsDump(c *kvm.VCPU) string {
	r, err1 := c.Regs()
	s, err2 := c.Sregs()
	if err := errors.Join(err1, err2); err != nil {
		return ""
	}
	return fmt.Sprintf(" (rip %#x rsp %#x cr0 %#x cr3 %#x cr4 %#x efer %#x)", r.RIP, r.RSP, s.CR0, s.CR3, s.CR4, s.EFER)
}

// Status is a snapshot of the machine for operators.
type Status struct {
	Name        string        `json:"name"`
	RunState    RunState      `json:"runstate"`
	VCPUs       int           `json:"vcpus"`
	MemoryBytes uint64        `json:"memory_bytes"`
	Uptime      time.Duration `json:"uptime_ns"`
	Since       time.Time     `json:"since"`
	Last        Transition    `json:"last_transition"`
}

// Status reports the machine's state.
func (m *Machine) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Status{Name: m.cfg.Name, RunState: m.runstate, VCPUs: m.cfg.VCPUs, MemoryBytes: m.cfg.TotalMemory(), Since: m.since, Last: m.last}
	if !m.started.IsZero() {
		s.Uptime = time.Since(m.started)
	}
	return s
}

// logTripleFault records where the vCPU was when the guest triple
// faulted: "why did my guest reset" needs more than the fact.
func logTripleFault(log zerolog.Logger, c *kvm.VCPU) {
	ev := log.Warn()
	if r, err := c.Regs(); err == nil {
		ev = ev.Str("rip", fmt.Sprintf("%#x", r.RIP)).Str("rsp", fmt.Sprintf("%#x", r.RSP)).Str("rflags", fmt.Sprintf("%#x", r.RFLAGS))
	}
	if sr, err := c.Sregs(); err == nil {
		ev = ev.Str("cs", fmt.Sprintf("%#x", sr.CS.Selector)).Str("cr0", fmt.Sprintf("%#x", sr.CR0)).Str("cr2", fmt.Sprintf("%#x", sr.CR2)).
			Str("cr3", fmt.Sprintf("%#x", sr.CR3)).Str("cr4", fmt.Sprintf("%#x", sr.CR4)).Str("efer", fmt.Sprintf("%#x", sr.EFER)).
			Str("idt", fmt.Sprintf("%#x/%#x", sr.IDT.Base, sr.IDT.Limit))
	}
	ev.Msg("guest triple fault: vCPU state at the shutdown")
}
