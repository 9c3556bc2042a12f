# shellcheck shell=sh
# TestLabRebootResume's lab host script (RebootScenario in
# qa/lab/reboot.go). Parameters (set before it): CYCLES, and FAULTS: one
# refused resume a line, "TAG PMVM-RUN-ARGUMENTS" (RebootFaults).
# shellcheck source=SCRIPTDIR/lib.sh
. /lab/lib.sh
VM=labguest
dax_setup
for c in /lab/guest.toml /lab/wrong-vcpus.toml /lab/other-vm.toml /lab/missing-dax.toml; do dax_config $c; done
pmvm_start /lab/guest.toml
wait_for 'PMVM-GUEST ready' 600 || fail "the guest never got ready (qemu-ga + pattern fill)"
lab "ready-seen l1-date=$(now)"
wait_for 'PMVM-GUEST boot_id=' 5 || fail "the guest printed no boot_id"
save() {
	run_cmd "save-$1" pmvm save $VM --state /tmp/labguest.state --timeout 60s
	[ "$RC" = 0 ] || fail "pmvm save (cycle $1) exited $RC: $OUT"
	pmvm_wait 60 || fail "pmvm did not exit after pmvm save (cycle $1)"
	[ "$PMVM_RC" = 0 ] || fail "pmvm exited $PMVM_RC after pmvm save (cycle $1)"
}
resume() {
	pmvm_start /lab/guest.toml --incoming /tmp/labguest.state
	wait_for "PMVM-GUEST resumed n=$1 " 120 || fail "the guest did not report resume $1 after pmvm run --incoming"
	lab "resumed-seen n=$1 l1-date=$(now)"
	wait_for "PMVM-GUEST pattern-verify [A-Za-z]+ .*round=$1 " 600 || fail "the pattern check after resume $1 did not finish"
}
faults() {
	run_cmd inspect pmvm state inspect /tmp/labguest.state
	[ "$RC" = 0 ] || fail "pmvm state inspect exited $RC"
	size=$(stat -c %s /tmp/labguest.state)
	head -c $((size / 2)) /tmp/labguest.state > /tmp/truncated.state
	cp /tmp/labguest.state /tmp/corrupted.state
	printf '\377' | dd of=/tmp/corrupted.state bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
	cp /tmp/labguest.state /tmp/newer.state
	printf '\011' | dd of=/tmp/newer.state bs=1 seek=8 conv=notrunc 2>/dev/null
	daxpeek --sum /dev/dax0.0 || fail "daxpeek --sum failed"
	while read -r _tag _args; do
		[ -n "$_tag" ] || continue
		# shellcheck disable=SC2086 # _args is pmvm run's arguments, one a word
		run_cmd "fault-$_tag" pmvm run $_args --log-level error
		[ "$RC" != 0 ] || fail "pmvm run $_args was not refused"
	done <<FAULTS_END
$FAULTS
FAULTS_END
	daxpeek --sum /dev/dax0.0 || fail "daxpeek --sum failed"
}
n=1
while [ $n -le "$CYCLES" ]; do
	save $n
	if [ $n = 1 ]; then faults; fi
	resume $n
	n=$((n+1))
done
pmvm_stop
