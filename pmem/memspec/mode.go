package memspec

// Mode says what the VM must survive, and so which memory it may use. The
// config names it, pmem refuses memory that cannot honour it, and a state
// file records the mode it was saved in.
type Mode string

const (
	// ModeNone: the VM lives as long as the VMM process.
	ModeNone Mode = "none"
	// ModeReboot: the VM survives a host kernel update (suspend to S3,
	// kexec, resume). Guest RAM must outlive the host kernel.
	ModeReboot Mode = "reboot"
	// ModeRestart: the VM survives a restart of the VMM binary (exec with
	// memory descriptors inherited). Guest RAM must outlive the process.
	ModeRestart Mode = "restart"
)

// OrDefault returns the mode with the default applied: "" means ModeNone.
func (m Mode) OrDefault() Mode {
	if m == "" {
		return ModeNone
	}
	return m
}

// Valid reports whether m (after the default) is one of the three modes.
func (m Mode) Valid() bool {
	switch m.OrDefault() {
	case ModeNone, ModeReboot, ModeRestart:
		return true
	}
	return false
}

// CarriedByStateFile reports whether a VM of mode m is carried over through
// a state file (reboot and restart); a ModeNone VM never writes one.
func (m Mode) CarriedByStateFile() bool { return m == ModeReboot || m == ModeRestart }
