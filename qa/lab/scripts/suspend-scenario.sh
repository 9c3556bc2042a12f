# shellcheck shell=sh
# TestLabSuspendWake's lab host script (SuspendScenario in
# qa/lab/scenario.go). Parameters (set before it): VM, CYCLES,
# SUSPEND_TIMEOUT, RTC (1: one more cycle woken by the guest's RTC alarm),
# NO_AGENT (1: a last suspend after the guest stopped qemu-ga, with
# --timeout NO_AGENT_TIMEOUT, must fail).
# shellcheck source=SCRIPTDIR/lib.sh
. /lab/lib.sh
pmvm_start /lab/guest.toml
wait_for 'PMVM-GUEST ready' 600 || fail "the guest never got ready (qemu-ga + pattern fill)"
lab "ready-seen l1-date=$(now)"
wait_for 'PMVM-GUEST boot_id=' 5 || fail "the guest printed no boot_id"
wait_for 'PMVM-GUEST mem-sleep=' 5 || fail "the guest printed no mem-sleep"
check_resume() {
	wait_for "PMVM-GUEST resumed n=$1 " "$2" || fail "$3"
	lab "resumed-seen n=$1 l1-date=$(now)"
	wait_for "PMVM-GUEST pattern-verify [A-Za-z]+ .*round=$1 " 600 || fail "the pattern check after resume $1 did not finish"
}
cycle() {
	run_cmd "suspend-$1" pmvm suspend "$VM" --timeout "$SUSPEND_TIMEOUT"
	[ "$RC" = 0 ] || fail "pmvm suspend $VM (cycle $1) exited $RC: $OUT"
	run_cmd "status-$1" pmvm status "$VM"
	_st=$(echo "$OUT" | grep -m1 '^runstate:')
	case "${_st:-$OUT}" in *suspended*) ;; *) fail "pmvm status $VM right after pmvm suspend returned (cycle $1) does not say suspended: ${_st:-$OUT}";; esac
	run_cmd "wakeup-$1" pmvm wakeup "$VM"
	[ "$RC" = 0 ] || fail "pmvm wakeup $VM (cycle $1) exited $RC: $OUT"
	check_resume "$1" 120 "the guest did not report resume $1 after pmvm wakeup"
}
n=1
while [ $n -le "$CYCLES" ]; do
	cycle $n
	n=$((n+1))
done
if [ "$RTC" = 1 ]; then
	wait_for "PMVM-GUEST rtc-armed n=$n " 60 || fail "the guest did not arm its RTC alarm"
	run_cmd "suspend-$n" pmvm suspend "$VM" --timeout "$SUSPEND_TIMEOUT"
	[ "$RC" = 0 ] || fail "pmvm suspend $VM (RTC cycle) exited $RC: $OUT"
	run_cmd "status-$n" pmvm status "$VM"
	check_resume $n 120 "the guest did not wake by its RTC alarm (no pmvm wakeup was sent)"
fi
if [ "$NO_AGENT" = 1 ]; then
	wait_for 'PMVM-GUEST qga-stopped' 60 || fail "the guest did not stop qemu-ga"
	run_cmd noagent pmvm suspend "$VM" --timeout "$NO_AGENT_TIMEOUT"
	[ "$RC" != 0 ] || fail "pmvm suspend succeeded although qemu-ga is not running"
	run_cmd noagent-status pmvm status "$VM"
	a=$(grep -c 'PMVM-GUEST alive n=' "$CONSOLE")
	wait_for "PMVM-GUEST alive n=$((a+1)) " 30 || fail "the guest stopped running after the failed suspend"
fi
pmvm_stop
