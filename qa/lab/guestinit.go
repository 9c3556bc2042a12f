package lab

import "strconv"

// Guest /init builders for the persistent-memory and S3 tests. Every one
// starts with InitPrelude and GuestReport, so the markers of GuestInit
// (uname, cpus-online, memtotal-kb, acpi-errors) come first.

// GuestLib is shell for guest inits (scripts/guest-lib.sh):
// wait_file FILE STRING SECONDS waits until FILE exists and contains
// STRING ("" = only exists).
var GuestLib = script("guest-lib.sh")

// GuestAgentStart starts Debian's qemu-ga on COM2 (/dev/ttyS1: the line
// pmvm exposes as [agent] socket, and -device isa-serial under QEMU) and
// sets QGA_PID (scripts/guest-agent-start.sh). No systemctl and no
// pm-is-supported exist in the guest, so qga 7.2's guest-suspend-ram takes
// its last path: it checks that /sys/power/state lists "mem" and, in a
// child, writes "mem" to it. The fsfreeze hook is off (no -F); the state
// dir is /run.
//
//	PMVM-GUEST qga-started pid=<pid>
//	PMVM-GUEST ERROR: qemu-ga ...        (it exited at once)
var GuestAgentStart = script("guest-agent-start.sh")

// PMReport prints what S3 needs from the guest kernel (scripts/pm-report.sh):
//
//	PMVM-GUEST power-state=<cat /sys/power/state>   (must list mem)
//	PMVM-GUEST mem-sleep=<cat /sys/power/mem_sleep> (must be "s2idle [deep]": deep = ACPI S3)
//	PMVM-GUEST boot_id=<uuid>
var PMReport = script("pm-report.sh")

// PMGuest configures PMGuestInit.
type PMGuest struct {
	Seed    uint64 // pattern seed
	Percent int    // share of MemTotal the pattern fills (default 50)
	// RTCAfter: after resume number RTCAfter (and its pattern check), arm
	// the RTC wake alarm RTCSeconds ahead (0 = never).
	RTCAfter   int
	RTCSeconds int // default 10
	// StopAgentAfter: after resume number StopAgentAfter (and the RTC
	// arming, if both), kill qemu-ga and print heartbeats (0 = never).
	StopAgentAfter int
}

// PMGuestInit returns a guest /init for the S3 tests (its body is
// scripts/pm-guest.sh). It reports, starts
// qemu-ga, fills memory with `pattern fill` and then polls
// /sys/power/suspend_stats/success (the kernel counts each completed
// suspend; it prints "PM: suspend exit" at the same point) twice a second.
// After each resume it prints a line, has the pattern daemon check every
// byte (SIGUSR1) and waits for the verdict. Markers, in order:
//
//	(GuestReport, PMReport)
//	PMVM-GUEST qga-started pid=<pid>
//	PMVM-GUEST pattern-filled bytes=<n> sha256=<hex> seed=<seed> mlocked=<bool> secs=<t>
//	PMVM-GUEST ready date=<epoch s> uptime=<s since boot>
//	then for each resume k = 1, 2, ...:
//	PMVM-GUEST resumed n=<k> cpus-online=<list> boot_id=<uuid> pm-exit=<"PM: suspend exit" lines in dmesg> suspend-fail=<count> uptime=<s since boot> date=<epoch s>
//	PMVM-GUEST pattern-verify ok bytes=<n> round=<k> secs=<t>   (or BAD ... first-bad-offset=...)
//	PMVM-GUEST rtc-armed n=<k+1> secs=<s> alarm=<epoch s> date=<epoch s>   (k == RTCAfter)
//	PMVM-GUEST qga-stopped                                               (k == StopAgentAfter)
//	PMVM-GUEST alive n=<i> date=<epoch s>   every 2 s once qga is stopped
//
// The guest never powers off by itself: the scenario stops pmvm.
func PMGuestInit(o PMGuest) string {
	if o.Percent == 0 {
		o.Percent = 50
	}
	if o.RTCSeconds == 0 {
		o.RTCSeconds = 10
	}
	return InitPrelude + GuestReport + PMReport + GuestLib + ShellVars(map[string]string{
		"SEED":             strconv.FormatUint(o.Seed, 10),
		"PERCENT":          strconv.Itoa(o.Percent),
		"RTC_AFTER":        strconv.Itoa(o.RTCAfter),
		"RTC_SECS":         strconv.Itoa(o.RTCSeconds),
		"STOP_AGENT_AFTER": strconv.Itoa(o.StopAgentAfter),
	}) + GuestAgentStart + script("pm-guest.sh")
}

// LocateGuestInit returns a guest /init for the device-dax test
// (scripts/locate-guest.sh): it runs
// `pattern locate --seed seed` (which holds its page), waits for it, and
// powers off. Page compaction of mlocked pages is turned off first so the
// page stays where it was found. Markers, after GuestReport:
//
//	PMVM-GUEST pattern-gpa=0x<hex> marker=<hex of the page's first 32 bytes>
//	PMVM-GUEST done
func LocateGuestInit(seed uint64) string {
	return InitPrelude + GuestReport + GuestLib +
		ShellVars(map[string]string{"SEED": strconv.FormatUint(seed, 10)}) + script("locate-guest.sh")
}
