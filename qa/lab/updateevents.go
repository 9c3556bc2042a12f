package lab

import (
	"regexp"
	"strconv"
	"strings"
)

// The update lab's console as typed events: ParseUpdateLine turns one
// "PMVM-LAB ..." line of UpdateScenario or its /init into a value, and
// CheckUpdateRun reads those values in order and judges them.

// UpdateEvent is one parsed lab line; its concrete type says which.
type UpdateEvent interface{ updateEvent() }

// Events, in the order UpdateScenario prints them.
type (
	// EvInit is the init's "init <uname -r> phase=<phase>".
	EvInit struct{ Uname, Phase string }
	// EvL1Facts is "l1 phase=<phase> uname=<uname -r> date=<epoch s.us>".
	EvL1Facts struct {
		Phase, Uname string
		Date         float64
	}
	// EvDax is "dax name=<dax> size=<bytes> uuid=<uuid>".
	EvDax struct {
		Name string
		Size uint64
		UUID string
	}
	// EvStateFS is "state-fs dev=<dev> type=<fs>".
	EvStateFS struct{ Dev, Type string }
	// EvCgroup2 is "cgroup2 controllers=<list>".
	EvCgroup2 struct{ Controllers string }
	// EvVM is a watcher's "<tag> vm=<vm> l1-date=<s> <guest line>" (tag
	// vm-ready, resumed or verified), or its "<tag> vm=<vm> FAILED: ...".
	EvVM struct {
		Tag, VM string
		Failed  bool
		L1Date  int64
		Guest   string            // the guest's words after l1-date (or what FAILED says)
		Fields  map[string]string // Fields(Guest)
	}
	// EvCgroupBefore is "cgroup-before vm=<vm> pid=<pid> cgroup=<path>".
	EvCgroupBefore struct{ VM, Cgroup string }
	// EvOutput is one line of a command's output: "<tag>: <text>".
	EvOutput struct{ Tag, Text string }
	// EvExit is a command's end: "<tag>-exit=<code> [secs=<s>]".
	EvExit struct {
		Tag  string
		Code int
	}
	// EvAfterRefusal is "after-refusal state-files=<n> kexec-loaded=<0|1>".
	EvAfterRefusal struct {
		StateFiles  int
		KexecLoaded string
	}
	// EvStopped is "stopped vm=<vm> exit=<code>".
	EvStopped struct {
		VM   string
		Exit int
	}
	// EvUpdateStart is "update-start l1-date=<s>".
	EvUpdateStart struct{}
	// EvUpdateOutputEnd is "update-output-end lines=<n>".
	EvUpdateOutputEnd struct{}
	// EvProc is "proc pid=<pid> config=<file> cgroup=<path>".
	EvProc struct {
		PID            int
		Config, Cgroup string
	}
	// EvStateDir is "state-dir <names>".
	EvStateDir struct{ Names []string }
	// EvScenarioExit is "scenario-exit=<code>".
	EvScenarioExit struct{ Code int }
	// EvError is "ERROR: <what>": the scenario gave up.
	EvError struct{ Msg string }
	// EvOther is a lab line no event describes (a WARNING, wait_for's
	// "got: ..."): skipped.
	EvOther struct{ Text string }
)

func (EvInit) updateEvent()            {}
func (EvL1Facts) updateEvent()         {}
func (EvDax) updateEvent()             {}
func (EvStateFS) updateEvent()         {}
func (EvCgroup2) updateEvent()         {}
func (EvVM) updateEvent()              {}
func (EvCgroupBefore) updateEvent()    {}
func (EvOutput) updateEvent()          {}
func (EvExit) updateEvent()            {}
func (EvAfterRefusal) updateEvent()    {}
func (EvStopped) updateEvent()         {}
func (EvUpdateStart) updateEvent()     {}
func (EvUpdateOutputEnd) updateEvent() {}
func (EvProc) updateEvent()            {}
func (EvStateDir) updateEvent()        {}
func (EvScenarioExit) updateEvent()    {}
func (EvError) updateEvent()           {}
func (EvOther) updateEvent()           {}

// labLinePrefix starts every line the lab host's scripts print.
const labLinePrefix = "PMVM-LAB "

var (
	evInitRe         = regexp.MustCompile(`^init (\S+) phase=(\S+)$`)
	evL1Re           = regexp.MustCompile(`^l1 phase=(\S+) uname=(\S+) date=([0-9.]+)`)
	evDaxRe          = regexp.MustCompile(`^dax name=(\S+) size=(\d+) uuid=(\S*)`)
	evStateFSRe      = regexp.MustCompile(`^state-fs dev=(\S+) type=(\S+)`)
	evCgroup2Re      = regexp.MustCompile(`^cgroup2 controllers=(\S*)`)
	evVMRe           = regexp.MustCompile(`^(vm-ready|resumed|verified) vm=(\S+) (.*)$`)
	evVMSeenRe       = regexp.MustCompile(`^l1-date=(\d+) ?(.*)$`)
	evCgroupBeforeRe = regexp.MustCompile(`^cgroup-before vm=(\S+) pid=\S* cgroup=(\S*)`)
	evAfterRefusalRe = regexp.MustCompile(`^after-refusal state-files=(\d+) kexec-loaded=(\S+)`)
	evStoppedRe      = regexp.MustCompile(`^stopped vm=(\S+) exit=(\d+)`)
	evProcRe         = regexp.MustCompile(`^proc pid=(\d+) config=(\S*) cgroup=(\S*)`)
	evScenarioExitRe = regexp.MustCompile(`^scenario-exit=(\d+)`)
	evExitRe         = regexp.MustCompile(`^([a-z0-9-]+)-exit=(\d+)(?: secs=\d+)?$`)
	evOutputRe       = regexp.MustCompile(`^([a-z0-9-]+): (.*)$`)
)

// ParseUpdateLine parses one console line. ok is false for a line that
// is not the lab host's (a kernel message, a relayed guest or pmvm line).
func ParseUpdateLine(line string) (ev UpdateEvent, ok bool) {
	s, ok := strings.CutPrefix(line, labLinePrefix)
	if !ok {
		return nil, false
	}
	if msg, isErr := strings.CutPrefix(s, "ERROR: "); isErr {
		return EvError{Msg: msg}, true
	}
	if m := evInitRe.FindStringSubmatch(s); m != nil {
		return EvInit{Uname: m[1], Phase: m[2]}, true
	}
	if m := evL1Re.FindStringSubmatch(s); m != nil {
		d, _ := strconv.ParseFloat(m[3], 64)
		return EvL1Facts{Phase: m[1], Uname: m[2], Date: d}, true
	}
	if m := evDaxRe.FindStringSubmatch(s); m != nil {
		size, _ := strconv.ParseUint(m[2], 10, 64)
		return EvDax{Name: m[1], Size: size, UUID: m[3]}, true
	}
	if m := evStateFSRe.FindStringSubmatch(s); m != nil {
		return EvStateFS{Dev: m[1], Type: m[2]}, true
	}
	if m := evCgroup2Re.FindStringSubmatch(s); m != nil {
		return EvCgroup2{Controllers: m[1]}, true
	}
	if m := evVMRe.FindStringSubmatch(s); m != nil {
		return parseVMEvent(m[1], m[2], m[3]), true
	}
	if m := evCgroupBeforeRe.FindStringSubmatch(s); m != nil {
		return EvCgroupBefore{VM: m[1], Cgroup: m[2]}, true
	}
	if m := evAfterRefusalRe.FindStringSubmatch(s); m != nil {
		return EvAfterRefusal{StateFiles: int(atoi64(m[1])), KexecLoaded: m[2]}, true
	}
	if m := evStoppedRe.FindStringSubmatch(s); m != nil {
		return EvStopped{VM: m[1], Exit: int(atoi64(m[2]))}, true
	}
	if strings.HasPrefix(s, "update-start ") {
		return EvUpdateStart{}, true
	}
	if strings.HasPrefix(s, "update-output-end ") {
		return EvUpdateOutputEnd{}, true
	}
	if m := evProcRe.FindStringSubmatch(s); m != nil {
		return EvProc{PID: int(atoi64(m[1])), Config: m[2], Cgroup: m[3]}, true
	}
	if rest, isDir := strings.CutPrefix(s, "state-dir"); isDir && (rest == "" || rest[0] == ' ') {
		return EvStateDir{Names: strings.Fields(rest)}, true
	}
	if m := evScenarioExitRe.FindStringSubmatch(s); m != nil {
		return EvScenarioExit{Code: int(atoi64(m[1]))}, true
	}
	if m := evExitRe.FindStringSubmatch(s); m != nil {
		return EvExit{Tag: m[1], Code: int(atoi64(m[2]))}, true
	}
	if m := evOutputRe.FindStringSubmatch(s); m != nil && m[1] != "got" {
		return EvOutput{Tag: m[1], Text: m[2]}, true
	}
	return EvOther{Text: s}, true
}

// parseVMEvent parses the rest of a watcher's line of VM vm.
func parseVMEvent(tag, vm, rest string) EvVM {
	if what, failed := strings.CutPrefix(rest, "FAILED"); failed {
		return EvVM{Tag: tag, VM: vm, Failed: true, Guest: strings.TrimPrefix(what, ": ")}
	}
	ev := EvVM{Tag: tag, VM: vm, Guest: rest}
	if m := evVMSeenRe.FindStringSubmatch(rest); m != nil {
		ev.L1Date, ev.Guest = atoi64(m[1]), m[2]
	}
	ev.Fields = Fields(ev.Guest)
	return ev
}
