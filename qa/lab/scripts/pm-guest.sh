# shellcheck shell=sh
# The body of PMGuestInit (qa/lab/guestinit.go), after the prelude, the
# reports (health_report: guest-report.sh), guest-lib.sh and
# guest-agent-start.sh. Parameters (set before
# it): SEED PERCENT RTC_AFTER RTC_SECS STOP_AGENT_AFTER; QGA_PID comes
# from guest-agent-start.sh.
echo 0 > /proc/sys/vm/compact_unevictable_allowed 2>/dev/null
pattern fill --percent "$PERCENT" --seed "$SEED" --ready /tmp/pattern.state &
PAT=$!
wait_file /tmp/pattern.state filled 900 || echo "PMVM-GUEST ERROR: pattern fill did not finish"
echo "PMVM-GUEST ready date=$(date +%s) uptime=$(cut -d' ' -f1 /proc/uptime)"
arm_rtc() {
	w=/sys/class/rtc/rtc0/wakealarm
	echo 0 > $w
	if echo "+$RTC_SECS" > $w; then
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
		health_report "resume-$n"
		kill -USR1 "$PAT"
		wait_file /tmp/pattern.state "round=$n " 900 || echo "PMVM-GUEST ERROR: pattern check $n did not finish"
		if [ "$n" -eq "$RTC_AFTER" ]; then arm_rtc; fi
		if [ "$n" -eq "$STOP_AGENT_AFTER" ]; then
			kill "$QGA_PID"; wait "$QGA_PID" 2>/dev/null; agent=0
			echo "PMVM-GUEST qga-stopped"
		fi
	fi
	if [ $agent = 0 ]; then
		tick=$((tick+1))
		if [ $((tick % 4)) = 0 ]; then alive=$((alive+1)); echo "PMVM-GUEST alive n=$alive date=$(date +%s)"; fi
	fi
	sleep 0.5
done
