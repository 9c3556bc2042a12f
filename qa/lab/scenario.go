package lab

import "strconv"

// ScenarioLib is /lab/lib.sh in the lab host (scripts/lib.sh): shell helpers that let a
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
var ScenarioLib = script("lib.sh")

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

// DaxScenario is TestLabDax's lab host script, scripts/dax-scenario.sh (/lab/guest.toml is
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
//	then DaxColdBoots times, a cold boot over the memory the guests left:
//	PMVM-LAB pmvm-started ...  PMVM-LAB got: PMVM-GUEST done  PMVM-LAB pmvm-exit=<code>
//	PMVM-LAB coldboot-again n=<k> exit=<code>
var DaxScenario = ShellVars(map[string]string{"COLD_BOOTS": strconv.Itoa(DaxColdBoots)}) + script("dax-scenario.sh")

// DaxColdBoots is how many times DaxScenario cold-boots the guest again
// over the memory the previous guest left on the namespace (issue 12: such
// a boot once triple-faulted in 2 of 10 tries).
const DaxColdBoots = 3

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

// SuspendScenario returns TestLabSuspendWake's lab host script
// (scripts/suspend-scenario.sh with the plan as its parameters): pmvm runs
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
	return ShellVars(map[string]string{
		"VM":               p.VM,
		"CYCLES":           strconv.Itoa(p.Cycles),
		"SUSPEND_TIMEOUT":  p.SuspendTimeout,
		"RTC":              boolVar(p.RTC),
		"NO_AGENT":         boolVar(p.NoAgent),
		"NO_AGENT_TIMEOUT": p.NoAgentTimeout,
	}) + script("suspend-scenario.sh")
}

// boolVar is a shell parameter's true (1) or false (0).
func boolVar(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
