package lab

import (
	"fmt"
	"strings"
)

// ScenarioLib is /lab/lib.sh in the lab host: shell helpers that let a
// scenario sequence steps against a guest that pmvm runs in the
// background. A scenario starts with ". /lab/lib.sh".
//
// pmvm_start CONFIG [ARGS]  runs "pmvm run CONFIG ARGS" in the background;
//
//	its stdout (the guest console) is appended to $CONSOLE
//	($LABTMP/console.log, LABTMP=/tmp), its stderr (pmvm's log) to
//	$LABTMP/pmvm.log, and both are relayed, line by line and prefixed
//	"[l2] ", to the lab host console. Sets PMVM_PID.
//
// wait_for ERE SECONDS      polls $CONSOLE (5 times a second) for a line
//
//	matching ERE (grep -E; the first match in the file counts, so make
//	patterns unique: "resumed n=1 " with its trailing space; a last line
//	without its newline yet is not looked at). On success
//	prints "PMVM-LAB got: <line>" and sets GOT to the line. Fails (returns
//	1 after printing why) on timeout, when pmvm has exited without the
//	line, or at once when a line matches GUEST_FAIL_RE.
//
// pmvm_running              true while pmvm runs.
// pmvm_wait SECONDS         waits for pmvm to exit; prints
//
//	"PMVM-LAB pmvm-exit=<code>" and sets PMVM_RC (kills it and returns 1
//	on timeout).
//
// pmvm_stop                 SIGTERM to pmvm, then pmvm_wait 30.
// run_cmd TAG CMD...        runs CMD, prints each output line as
//
//	"PMVM-LAB TAG: <line>" and then "PMVM-LAB TAG-exit=<code> secs=<s>";
//	sets RC and OUT. Never fails by itself.
//
// lab MSG / fail MSG        print "PMVM-LAB MSG" / "PMVM-LAB ERROR: MSG"
//
//	(fail stops pmvm and exits the scenario: the test fails at once on
//	the ERROR line).
//
// dax_setup                 makes /dev/dax0.0 from the memmap= pmem
//
//	(ndctl create-namespace -f -e namespace0.0 -m devdax), prints
//	"PMVM-LAB dax-ready size=<bytes> align=<bytes>" from sysfs and sets
//	DAX_SIZE and DAX_ALIGN.
//
// dax_config FILE           replaces @DAX_SIZE@ in FILE with DAX_SIZE.
const ScenarioLib = `# /lab/lib.sh: helpers for lab scenarios (see qa/lab/scenario.go).
LABTMP=${LABTMP:-/tmp}
CONSOLE=${CONSOLE:-$LABTMP/console.log}
GUEST_FAIL_RE=${GUEST_FAIL_RE:-'PMVM-GUEST ERROR|pattern-verify BAD|pattern-error|Kernel panic'}
PMVM_PID=
lab() { echo "PMVM-LAB $*"; }
fail() {
	echo "PMVM-LAB ERROR: $*"
	if pmvm_running; then kill -TERM $PMVM_PID 2>/dev/null; sleep 1; fi
	exit 1
}
now() { date +%s; }
pmvm_running() { [ -n "$PMVM_PID" ] && [ ! -e $LABTMP/pmvm.rc ]; }
pmvm_start() {
	rm -f $LABTMP/pmvm.pid $LABTMP/pmvm.rc
	: > "$CONSOLE"
	: > $LABTMP/pmvm.log
	# pmvm's own log (stderr) goes to its own file: written a line at a
	# time, it would otherwise land in the middle of a guest console line,
	# which the UART writes a byte at a time. Both are relayed.
	[ -n "$LOG_RELAY" ] && kill $LOG_RELAY 2>/dev/null
	tail -f $LABTMP/pmvm.log | sed -e 's/^/[l2] /' &
	LOG_RELAY=$!
	( pmvm run "$@" </dev/null 2>>$LABTMP/pmvm.log & echo $! > $LABTMP/pmvm.pid; wait $!; echo $? > $LABTMP/pmvm.rc ) \
		| tee -a "$CONSOLE" | sed -e 's/\r$//' -e 's/^/[l2] /' &
	_i=0
	while [ ! -s $LABTMP/pmvm.pid ] && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i+1)); done
	PMVM_PID=$(cat $LABTMP/pmvm.pid 2>/dev/null)
	[ -n "$PMVM_PID" ] || fail "pmvm run $* did not start"
	lab "pmvm-started pid=$PMVM_PID args=$*"
}
# complete_lines: a snapshot of $CONSOLE without its last line if that one
# is still being written (the guest's UART sends a byte at a time).
complete_lines() {
	cp "$CONSOLE" $LABTMP/console.snap 2>/dev/null || return 0
	if [ "$(tail -c 1 $LABTMP/console.snap | od -An -tx1 | tr -d ' \n')" = 0a ]; then
		cat $LABTMP/console.snap
	else
		sed '$d' $LABTMP/console.snap
	fi
}
wait_for() {
	_pat=$1
	_end=$(( $(now) + ${2:-60} ))
	while :; do
		_exited=0
		[ -e $LABTMP/pmvm.rc ] && _exited=1
		complete_lines > $LABTMP/console.lines
		GOT=$(grep -E -m1 -- "$_pat" $LABTMP/console.lines | tr -d '\r')
		if [ -n "$GOT" ]; then echo "PMVM-LAB got: $GOT"; return 0; fi
		_bad=$(grep -E -m1 -- "$GUEST_FAIL_RE" $LABTMP/console.lines | tr -d '\r')
		if [ -n "$_bad" ]; then lab "wait_for /$_pat/: guest failed: $_bad"; return 1; fi
		if [ $_exited = 1 ]; then
			lab "wait_for /$_pat/: pmvm exited with $(cat $LABTMP/pmvm.rc) first"
			return 1
		fi
		if [ $(now) -ge $_end ]; then lab "wait_for /$_pat/: no such line within ${2:-60}s"; return 1; fi
		sleep 0.2
	done
}
pmvm_wait() {
	_end=$(( $(now) + ${1:-60} ))
	while [ ! -e $LABTMP/pmvm.rc ]; do
		if [ $(now) -ge $_end ]; then
			lab "pmvm still running after ${1:-60}s: killing it"
			kill -KILL $PMVM_PID 2>/dev/null
			sleep 1
			return 1
		fi
		sleep 0.2
	done
	PMVM_RC=$(cat $LABTMP/pmvm.rc)
	sleep 1 # let the relay print the console's last lines first
	lab "pmvm-exit=$PMVM_RC"
}
pmvm_stop() {
	pmvm_running && kill -TERM $PMVM_PID
	pmvm_wait 30
}
run_cmd() {
	_tag=$1; shift
	_t0=$(now)
	OUT=$("$@" 2>&1)
	RC=$?
	[ -n "$OUT" ] && echo "$OUT" | tr -d '\r' | sed "s/^/PMVM-LAB $_tag: /"
	lab "$_tag-exit=$RC secs=$(( $(now) - _t0 ))"
	return 0
}
dax_setup() {
	_i=0
	while [ ! -b /dev/pmem0 ] && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i+1)); done
	[ -b /dev/pmem0 ] || fail "no /dev/pmem0: is memmap=256M!4G on the lab host's command line and nd_e820 loaded?"
	run_cmd ndctl ndctl create-namespace -f -e namespace0.0 -m devdax
	[ $RC = 0 ] || fail "ndctl create-namespace -f -e namespace0.0 -m devdax exited $RC"
	_i=0
	while [ ! -c /dev/dax0.0 ] && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i+1)); done
	[ -c /dev/dax0.0 ] || fail "ndctl made a devdax namespace but /dev/dax0.0 did not appear"
	_sys=/sys/bus/dax/devices/dax0.0
	DAX_SIZE=$(cat $_sys/size)
	DAX_ALIGN=$(cat $_sys/align 2>/dev/null || echo 2097152)
	lab "dax-ready size=$DAX_SIZE align=$DAX_ALIGN"
}
dax_config() {
	[ -n "$DAX_SIZE" ] || fail "dax_config before dax_setup"
	sed -i "s/@DAX_SIZE@/$DAX_SIZE/g" "$1"
}
`

// DaxSizeAuto as a MemoryBlock size is replaced by the device-dax size in
// the lab host (dax_config), before pmvm reads the config.
const DaxSizeAuto = "@DAX_SIZE@"

// DaxGuestConfig is the device-dax guest: mode = "reboot", 2 vCPUs and
// one block ram0 holding all of /dev/dax0.0 (pmem refuses a backing that
// is not exactly the configured size), at guest-physical 0, so a guest
// physical address below the block's end is also its offset in the device.
func DaxGuestConfig() VMConfig {
	c := DefaultGuestConfig()
	c.Mode = "reboot"
	c.Memory = []MemoryBlock{{Name: "ram0", Size: DaxSizeAuto, Backing: "/dev/dax0.0", Shared: true}}
	return c
}

// AnonRebootConfig is a config pmvm must refuse: mode = "reboot" with
// anonymous guest RAM in block "ram0" (it cannot survive a kexec).
func AnonRebootConfig() VMConfig {
	c := DefaultGuestConfig()
	c.Name = "anonreboot"
	c.Mode = "reboot"
	c.Agent = "/run/pmvm/anonreboot/agent.sock"
	c.Control = "/run/pmvm/anonreboot/control.sock"
	c.Memory = []MemoryBlock{{Name: "ram0", Size: "256MiB", Backing: "anonymous", Shared: true}}
	return c
}

// DaxScenario is TestLabDax's lab host script (/lab/guest.toml is
// DaxGuestConfig, /lab/anon-reboot.toml AnonRebootConfig, the guest runs
// LocateGuestInit). Lines, in order:
//
//	PMVM-LAB ndctl: <ndctl output>  ...  PMVM-LAB ndctl-exit=0 secs=<s>
//	PMVM-LAB dax-ready size=<bytes> align=<bytes>
//	PMVM-LAB check-dax: <pmvm check /lab/guest.toml output> ... PMVM-LAB check-dax-exit=<code> secs=<s>
//	PMVM-LAB check-anon: <pmvm check /lab/anon-reboot.toml output> ... PMVM-LAB check-anon-exit=<code> secs=<s>
//	PMVM-LAB pmvm-started pid=<pid> args=/lab/guest.toml
//	PMVM-LAB got: PMVM-GUEST pattern-gpa=0x<hex> marker=<hex>
//	PMVM-LAB pmvm-exit=<code>
//	PMVM-LAB daxpeek dev=/dev/dax0.0 offset=0x<gpa> len=32 hex=<hex>
const DaxScenario = `. /lab/lib.sh
dax_setup
dax_config /lab/guest.toml
run_cmd check-dax pmvm check /lab/guest.toml
run_cmd check-anon pmvm check /lab/anon-reboot.toml
pmvm_start /lab/guest.toml
wait_for 'PMVM-GUEST pattern-gpa=0x[0-9a-f]+ marker=[0-9a-f]+' 240 || fail "the guest never printed its pattern's address"
gpa=$(echo "$GOT" | sed -n 's/.*pattern-gpa=\(0x[0-9a-f]*\).*/\1/p')
pmvm_wait 120 || fail "pmvm did not exit after the guest powered off"
daxpeek /dev/dax0.0 $gpa 32 || fail "daxpeek /dev/dax0.0 $gpa 32 failed"
`

// SuspendPlan shapes SuspendScenario (and must agree with the guest's
// PMGuest settings).
type SuspendPlan struct {
	VM     string // pmvm VM name (default "labguest")
	Cycles int    // suspend/wakeup cycles driven by pmvm wakeup (default 3)
	// RTC: one more cycle after them in which the guest wakes itself by its
	// RTC alarm (the guest needs PMGuest.RTCAfter = Cycles).
	RTC bool
	// NoAgent: then suspend once more after the guest stopped qemu-ga
	// (PMGuest.StopAgentAfter = the last resume) with
	// --timeout NoAgentTimeout; it must fail and the guest keep running.
	NoAgent        bool
	NoAgentTimeout string // default "10s"
	SuspendTimeout string // --timeout of the normal suspends (default "60s")
}

// SuspendScenario returns TestLabSuspendWake's lab host script: pmvm runs
// /lab/guest.toml (a PMGuestInit guest) and the script drives it with
// pmvm suspend / status / wakeup. Lines, in order:
//
//	PMVM-LAB pmvm-started pid=<pid> args=/lab/guest.toml
//	PMVM-LAB got: PMVM-GUEST ready date=<guest epoch s>
//	PMVM-LAB ready-seen l1-date=<lab host epoch s>
//	PMVM-LAB got: PMVM-GUEST boot_id=<uuid>
//	PMVM-LAB got: PMVM-GUEST mem-sleep=<s2idle [deep]>
//	per cycle n = 1..Cycles:
//	PMVM-LAB suspend-<n>: <output> ...   PMVM-LAB suspend-<n>-exit=0 secs=<s>
//	PMVM-LAB status-<n>: <pmvm status output, must say suspended> ... PMVM-LAB status-<n>-exit=0 secs=<s>
//	PMVM-LAB wakeup-<n>: <output> ...    PMVM-LAB wakeup-<n>-exit=0 secs=<s>
//	PMVM-LAB got: PMVM-GUEST resumed n=<n> ... date=<guest epoch s> ...
//	PMVM-LAB resumed-seen n=<n> l1-date=<lab host epoch s>
//	PMVM-LAB got: PMVM-GUEST pattern-verify ok ... round=<n> ...
//	RTC cycle (n = Cycles+1):
//	PMVM-LAB got: PMVM-GUEST rtc-armed n=<n> ...
//	PMVM-LAB suspend-<n>: ... PMVM-LAB suspend-<n>-exit=0 secs=<s>
//	PMVM-LAB status-<n>: ...              (not checked: the alarm may already have fired)
//	PMVM-LAB got: PMVM-GUEST resumed n=<n> ...   (no pmvm wakeup was sent)
//	PMVM-LAB resumed-seen n=<n> l1-date=<s>
//	PMVM-LAB got: PMVM-GUEST pattern-verify ok ... round=<n> ...
//	no agent:
//	PMVM-LAB got: PMVM-GUEST qga-stopped
//	PMVM-LAB noagent: <pmvm suspend output> ... PMVM-LAB noagent-exit=<non-zero> secs=<s>
//	PMVM-LAB noagent-status: <pmvm status output> ... PMVM-LAB noagent-status-exit=0 secs=<s>
//	PMVM-LAB got: PMVM-GUEST alive n=<i> ...     (a heartbeat after the failed suspend)
//	PMVM-LAB pmvm-exit=<code>                      (pmvm_stop: SIGTERM, so 4)
//
// A failed step prints "PMVM-LAB ERROR: <what>" and ends the scenario.
func SuspendScenario(p SuspendPlan) string {
	if p.VM == "" {
		p.VM = "labguest"
	}
	if p.Cycles == 0 {
		p.Cycles = 3
	}
	if p.NoAgentTimeout == "" {
		p.NoAgentTimeout = "10s"
	}
	if p.SuspendTimeout == "" {
		p.SuspendTimeout = "60s"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `. /lab/lib.sh
VM=%s
pmvm_start /lab/guest.toml
wait_for 'PMVM-GUEST ready' 600 || fail "the guest never got ready (qemu-ga + pattern fill)"
lab "ready-seen l1-date=$(now)"
wait_for 'PMVM-GUEST boot_id=' 5 || fail "the guest printed no boot_id"
wait_for 'PMVM-GUEST mem-sleep=' 5 || fail "the guest printed no mem-sleep"
check_resume() {
	wait_for "PMVM-GUEST resumed n=$1 " $2 || fail "$3"
	lab "resumed-seen n=$1 l1-date=$(now)"
	wait_for "PMVM-GUEST pattern-verify [A-Za-z]+ .*round=$1 " 600 || fail "the pattern check after resume $1 did not finish"
}
cycle() {
	run_cmd suspend-$1 pmvm suspend $VM --timeout %s
	[ $RC = 0 ] || fail "pmvm suspend $VM (cycle $1) exited $RC: $OUT"
	run_cmd status-$1 pmvm status $VM
	_st=$(echo "$OUT" | grep -m1 '^runstate:')
	case "${_st:-$OUT}" in *suspended*) ;; *) fail "pmvm status $VM right after pmvm suspend returned (cycle $1) does not say suspended: ${_st:-$OUT}";; esac
	run_cmd wakeup-$1 pmvm wakeup $VM
	[ $RC = 0 ] || fail "pmvm wakeup $VM (cycle $1) exited $RC: $OUT"
	check_resume $1 120 "the guest did not report resume $1 after pmvm wakeup"
}
`, p.VM, p.SuspendTimeout)
	for n := 1; n <= p.Cycles; n++ {
		fmt.Fprintf(&b, "cycle %d\n", n)
	}
	last := p.Cycles
	if p.RTC {
		last++
		fmt.Fprintf(&b, `wait_for "PMVM-GUEST rtc-armed n=%[1]d " 60 || fail "the guest did not arm its RTC alarm"
run_cmd suspend-%[1]d pmvm suspend $VM --timeout %[2]s
[ $RC = 0 ] || fail "pmvm suspend $VM (RTC cycle) exited $RC: $OUT"
run_cmd status-%[1]d pmvm status $VM
check_resume %[1]d 120 "the guest did not wake by its RTC alarm (no pmvm wakeup was sent)"
`, last, p.SuspendTimeout)
	}
	if p.NoAgent {
		fmt.Fprintf(&b, `wait_for 'PMVM-GUEST qga-stopped' 60 || fail "the guest did not stop qemu-ga"
run_cmd noagent pmvm suspend $VM --timeout %s
[ $RC != 0 ] || fail "pmvm suspend succeeded although qemu-ga is not running"
run_cmd noagent-status pmvm status $VM
a=$(grep -c 'PMVM-GUEST alive n=' "$CONSOLE")
wait_for "PMVM-GUEST alive n=$((a+1)) " 30 || fail "the guest stopped running after the failed suspend"
`, p.NoAgentTimeout)
	}
	b.WriteString("pmvm_stop\n")
	return b.String()
}
