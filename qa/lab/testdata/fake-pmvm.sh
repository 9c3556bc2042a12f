# shellcheck shell=sh
# fakePmvm (qa/lab/scenario_test.go) stands in for pmvm and its guest in
# SuspendScenario: "run" plays a PMGuestInit guest, suspend/status/wakeup
# talk to it through files in $FAKE_STATE. FAKE_BUG=status makes status
# lie ("running") right after a suspend. RTC_AFTER, STOP_AFTER: see
# TestSuspendScenarioWithFakePmvm.
S=$FAKE_STATE
resumed() {
	n=$((n+1))
	echo "PMVM-GUEST resumed n=$n cpus-online=0-1 boot_id=b00t pm-exit=$n suspend-fail=0 date=$(date +%s)"
	echo "PMVM-GUEST pattern-verify ok bytes=4096 round=$n secs=0.0"
	if [ $n = "$RTC_AFTER" ]; then echo "PMVM-GUEST rtc-armed n=$((n+1)) secs=1 alarm=$(( $(date +%s) + 1 )) date=$(date +%s)"; touch "$S/rtc"; fi
	if [ $n = "$STOP_AFTER" ]; then touch "$S/noagent"; echo "PMVM-GUEST qga-stopped"; agent=0; fi
}
case "$1" in
run)
	trap 'echo "fake pmvm: stopped"; exit 4' TERM
	echo running > "$S/state"
	printf 'PMVM-GUEST boot_id=b00t\r\nPMVM-GUEST mem-sleep=s2idle [deep]\r\n'
	printf 'PMVM-GUEST ready da'; sleep 0.5; printf 'te=%s\r\n' "$(date +%s)"
	n=0 agent=1 tick=0 alive=0
	while :; do
		if [ -e "$S/suspend" ]; then
			rm "$S/suspend"; echo suspended > "$S/state"
			if [ -e "$S/rtc" ]; then rm "$S/rtc"; sleep 1; echo running > "$S/state"; resumed; fi
		fi
		if [ -e "$S/wakeup" ]; then rm "$S/wakeup"; echo running > "$S/state"; resumed; fi
		if [ $agent = 0 ]; then
			tick=$((tick+1))
			if [ $((tick % 5)) = 0 ]; then alive=$((alive+1)); echo "PMVM-GUEST alive n=$alive date=$(date +%s)"; fi
		fi
		sleep 0.1
	done;;
suspend)
	if [ -e "$S/noagent" ]; then
		sleep 1
		echo "pmvm suspend: $2: the guest agent did not answer within 1s; is qemu-ga running in the guest?" >&2
		exit 1
	fi
	touch "$S/suspend"
	while [ "$(cat "$S/state")" != suspended ]; do sleep 0.05; done
	echo "$2: suspended";;
status)
	if [ "$FAKE_BUG" = status ]; then echo "$2: running"; else echo "$2: $(cat "$S/state")"; fi;;
wakeup)
	touch "$S/wakeup"; echo "$2: woken";;
esac
