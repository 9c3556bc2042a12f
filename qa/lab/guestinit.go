package lab

import (
	"fmt"
	"strings"
)

// Guest /init builders for the persistent-memory and S3 tests. Every one
// starts with InitPrelude and GuestReport, so the markers of GuestInit
// (uname, cpus-online, memtotal-kb, acpi-errors) come first.

// GuestLib is shell for guest inits: wait_file FILE STRING SECONDS waits
// until FILE exists and contains STRING ("" = only exists).
const GuestLib = `wait_file() {
	_end=$(( $(date +%s) + $3 ))
	while [ $(date +%s) -le $_end ]; do
		if [ -e "$1" ] && { [ -z "$2" ] || grep -q -- "$2" "$1"; }; then return 0; fi
		sleep 0.2
	done
	return 1
}
`

// GuestAgentStart starts Debian's qemu-ga on COM2 (/dev/ttyS1: the line
// pmvm exposes as [agent] socket, and -device isa-serial under QEMU) and
// sets QGA_PID. No systemctl and no pm-is-supported exist in the guest,
// so qga 7.2's guest-suspend-ram takes its last path: it checks that
// /sys/power/state lists "mem" and, in a child, writes "mem" to it. The
// fsfreeze hook is off (no -F); the state dir is /run.
//
//	PMVM-GUEST qga-started pid=<pid>
//	PMVM-GUEST ERROR: qemu-ga ...        (it exited at once)
const GuestAgentStart = `mkdir -p /run /var/run
if [ ! -c /dev/ttyS1 ]; then echo "PMVM-GUEST ERROR: no /dev/ttyS1 for qemu-ga (COM2 missing?)"; fi
qemu-ga -m isa-serial -p /dev/ttyS1 -t /run -f /run/qemu-ga.pid &
QGA_PID=$!
sleep 0.5
if kill -0 $QGA_PID 2>/dev/null; then
	echo "PMVM-GUEST qga-started pid=$QGA_PID"
else
	echo "PMVM-GUEST ERROR: qemu-ga exited at start (see its messages above)"
fi
`

// PMReport prints what S3 needs from the guest kernel:
//
//	PMVM-GUEST power-state=<cat /sys/power/state>   (must list mem)
//	PMVM-GUEST mem-sleep=<cat /sys/power/mem_sleep> (must be "s2idle [deep]": deep = ACPI S3)
//	PMVM-GUEST boot_id=<uuid>
const PMReport = `echo "PMVM-GUEST power-state=$(cat /sys/power/state 2>/dev/null)"
echo "PMVM-GUEST mem-sleep=$(cat /sys/power/mem_sleep 2>/dev/null)"
echo "PMVM-GUEST boot_id=$(cat /proc/sys/kernel/random/boot_id)"
`

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

// PMGuestInit returns a guest /init for the S3 tests. It reports, starts
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
	var b strings.Builder
	b.WriteString(InitPrelude)
	b.WriteString(GuestReport)
	b.WriteString(PMReport)
	b.WriteString(GuestLib)
	fmt.Fprintf(&b, "SEED=%d PERCENT=%d RTC_AFTER=%d RTC_SECS=%d STOP_AGENT_AFTER=%d\n",
		o.Seed, o.Percent, o.RTCAfter, o.RTCSeconds, o.StopAgentAfter)
	b.WriteString(GuestAgentStart)
	b.WriteString(`echo 0 > /proc/sys/vm/compact_unevictable_allowed 2>/dev/null
pattern fill --percent $PERCENT --seed $SEED --ready /tmp/pattern.state &
PAT=$!
wait_file /tmp/pattern.state filled 900 || echo "PMVM-GUEST ERROR: pattern fill did not finish"
echo "PMVM-GUEST ready date=$(date +%s) uptime=$(cut -d' ' -f1 /proc/uptime)"
arm_rtc() {
	w=/sys/class/rtc/rtc0/wakealarm
	echo 0 > $w
	if echo +$RTC_SECS > $w; then
		echo "PMVM-GUEST rtc-armed n=$((n+1)) secs=$RTC_SECS alarm=$(cat $w) date=$(date +%s)"
	else
		echo "PMVM-GUEST ERROR: cannot arm the RTC wake alarm ($w)"
	fi
}
resumes() { cat /sys/power/suspend_stats/success 2>/dev/null || dmesg | grep -c 'PM: suspend exit'; }
n=$(resumes) agent=1 tick=0 alive=0
while :; do
	c=$(resumes)
	if [ "$c" -gt "$n" ]; then
		n=$c
		# every field first, the date last: it is compared with the lab
		# host's clock when the line arrives
		_cpus=$(cat /sys/devices/system/cpu/online)
		_bid=$(cat /proc/sys/kernel/random/boot_id)
		_pm=$(dmesg | grep -c 'PM: suspend exit')
		_fail=$(cat /sys/power/suspend_stats/fail 2>/dev/null)
		echo "PMVM-GUEST resumed n=$n cpus-online=$_cpus boot_id=$_bid pm-exit=$_pm suspend-fail=$_fail uptime=$(cut -d' ' -f1 /proc/uptime) date=$(date +%s)"
		kill -USR1 $PAT
		wait_file /tmp/pattern.state "round=$n " 900 || echo "PMVM-GUEST ERROR: pattern check $n did not finish"
		if [ "$n" -eq "$RTC_AFTER" ]; then arm_rtc; fi
		if [ "$n" -eq "$STOP_AGENT_AFTER" ]; then
			kill $QGA_PID; wait $QGA_PID 2>/dev/null; agent=0
			echo "PMVM-GUEST qga-stopped"
		fi
	fi
	if [ $agent = 0 ]; then
		tick=$((tick+1))
		if [ $((tick % 4)) = 0 ]; then alive=$((alive+1)); echo "PMVM-GUEST alive n=$alive date=$(date +%s)"; fi
	fi
	sleep 0.5
done
`)
	return b.String()
}

// LocateGuestInit returns a guest /init for the device-dax test: it runs
// `pattern locate --seed seed` (which holds its page), waits for it, and
// powers off. Page compaction of mlocked pages is turned off first so the
// page stays where it was found. Markers, after GuestReport:
//
//	PMVM-GUEST pattern-gpa=0x<hex> marker=<hex of the page's first 32 bytes>
//	PMVM-GUEST done
func LocateGuestInit(seed uint64) string {
	return InitPrelude + GuestReport + GuestLib + fmt.Sprintf(`echo 0 > /proc/sys/vm/compact_unevictable_allowed 2>/dev/null
pattern locate --seed %d --ready /tmp/located &
wait_file /tmp/located located 120 || echo "PMVM-GUEST ERROR: pattern locate did not finish"
echo "PMVM-GUEST done"
poweroff -f
`, seed)
}
