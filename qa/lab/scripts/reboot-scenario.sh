# shellcheck shell=sh
# TestLabRebootResume's lab host script: save and resume cycles with the
# fault matrix injected at its steps (RebootScenario in qa/lab/reboot.go
# says where). Parameters (set before it): CYCLES, and FAULTS: one refused
# resume a line, "TAG PMVM-RUN-ARGUMENTS" (the MatrixCases with Args).
# shellcheck source=SCRIPTDIR/lib.sh
. /lab/lib.sh
VM=labguest
STATE=/tmp/labguest.state
dax_setup
for c in /lab/guest.toml /lab/wrong-vcpus.toml /lab/wrong-memory.toml /lab/other-vm.toml /lab/missing-dax.toml; do dax_config $c; done
pmvm_start /lab/guest.toml
wait_for 'PMVM-GUEST ready' 600 || fail "the guest never got ready (qemu-ga + pattern fill)"
lab "ready-seen l1-date=$(now)"
wait_for 'PMVM-GUEST boot_id=' 5 || fail "the guest printed no boot_id"
# mx_sum CASE: the device's SHA-256 after CASE (JudgeMatrix compares it
# with the one printed before the case).
mx_sum() {
	_sum=$(daxpeek --sum /dev/dax0.0 | sed -n 's/.*sha256=\([0-9a-f]*\).*/\1/p')
	[ -n "$_sum" ] || fail "daxpeek --sum /dev/dax0.0 failed"
	lab "mx-sum case=$1 sha256=$_sum"
}
save() {
	run_cmd "save-$1" pmvm save $VM --state $STATE --timeout 60s
	[ "$RC" = 0 ] || fail "pmvm save (cycle $1) exited $RC: $OUT"
	pmvm_wait 60 || fail "pmvm did not exit after pmvm save (cycle $1)"
	[ "$PMVM_RC" = 0 ] || fail "pmvm exited $PMVM_RC after pmvm save (cycle $1)"
}
# resume N: pmvm run --incoming; returns 1 if the guest did not report
# resume N (the caller says whether that fails the scenario).
resume() {
	pmvm_start /lab/guest.toml --incoming $STATE
	wait_for "PMVM-GUEST resumed n=$1 " 120 || return 1
	lab "resumed-seen n=$1 l1-date=$(now)"
	wait_for "PMVM-GUEST pattern-verify [A-Za-z]+ .*round=$1 " 600 || fail "the pattern check after resume $1 did not finish"
}
# faults: the batch of refused resumes after the first save.
faults() {
	run_cmd inspect pmvm state inspect $STATE
	[ "$RC" = 0 ] || fail "pmvm state inspect exited $RC"
	size=$(stat -c %s $STATE)
	head -c $((size / 2)) $STATE > /tmp/truncated.state
	cp $STATE /tmp/corrupted.state
	printf '\377' | dd of=/tmp/corrupted.state bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
	cp $STATE /tmp/newer.state
	printf '\011' | dd of=/tmp/newer.state bs=1 seek=8 conv=notrunc 2>/dev/null
	mx_sum start
	while read -r _case _args; do
		[ -n "$_case" ] || continue
		if [ "$_case" = scrubbed ]; then
			# A cold reboot instead of a kexec: the firmware cleared the
			# memory. The region is put back after the refusal, so that
			# the guest can still be resumed.
			daxpeek --scrub /tmp/scrub.bin /dev/dax0.0 0 0x2000000 || fail "daxpeek --scrub failed"
		fi
		# shellcheck disable=SC2086 # _args is pmvm run's arguments, one a word
		run_cmd "mx-$_case" pmvm run $_args --log-level error
		if [ "$_case" = scrubbed ]; then
			daxpeek --unscrub /tmp/scrub.bin /dev/dax0.0 0 || fail "daxpeek --unscrub failed"
			rm -f /tmp/scrub.bin
		fi
		mx_sum "$_case"
	done <<FAULTS_END
$FAULTS
FAULTS_END
}
# guest_alive CASE: whether pmvm still runs the guest after CASE.
guest_alive() {
	_alive=no
	pmvm_running && kill -0 "$PMVM_PID" 2>/dev/null &&
		pmvm status $VM --json | grep -Eq '"runstate": ?"running"' && _alive=yes
	lab "mx-$1-alive=$_alive"
}
# second_pmvm: another VM on the same backing while the guest runs.
second_pmvm() {
	# timeout: were it not refused, it would run a second guest in the same memory
	run_cmd mx-second-pmvm timeout 60 pmvm run /lab/other-vm.toml --log-level error
	guest_alive second-pmvm
}
# disk_full N: pmvm save to a full file system; the guest must be woken
# again and report resume N with its pattern intact.
disk_full() {
	mkdir -p /tmp/full
	mount -t tmpfs -o size=4k tmpfs /tmp/full || fail "cannot mount a 4 KiB tmpfs on /tmp/full"
	dd if=/dev/zero of=/tmp/full/filler bs=1024 count=16 2>/dev/null # stops at ENOSPC: the file system is full
	run_cmd mx-disk-full pmvm save $VM --state /tmp/full/labguest.state --timeout 60s
	guest_alive disk-full
	_p=none
	if wait_for "PMVM-GUEST pattern-verify [A-Za-z]+ .*round=$1 " 120; then
		_p=$(echo "$GOT" | sed -n 's/.*pattern-verify \([A-Za-z]*\) .*/\1/p')
	fi
	lab "mx-disk-full-pattern=$_p"
	for _f in /tmp/full/* /tmp/full/.*; do [ -f "$_f" ] && lab "mx-disk-full: left in the full file system: $_f"; done
	umount /tmp/full
}
# killed_resume CASE N WHAT [FILE]: kill -9 of the resuming pmvm the
# moment FILE (default: its /proc/PID/maps) shows WHAT (killon), before
# its vCPUs run, then resume N for real.
killed_resume() {
	_kcase=$1; _kn=$2; _kwhat=$3; _kin=$4
	# killon waits for the pid file pmvm_start writes: started first, it
	# cannot miss a step of the resume's first milliseconds.
	rm -f "$LABTMP/pmvm.pid"
	# shellcheck disable=SC2086 # _kin is empty or one path
	killon "$LABTMP/pmvm.pid" "$_kwhat" 120 $_kin > "$LABTMP/killon.out" &
	_killon=$!
	pmvm_start /lab/guest.toml --incoming $STATE
	wait $_killon; _krc=$?
	cat "$LABTMP/killon.out"
	[ $_krc = 0 ] || fail "killon did not kill the resuming pmvm ($_kcase)"
	pmvm_wait 30 || fail "the killed pmvm did not exit ($_kcase)"
	# Where the kill landed: pmvm logs the move-aside after the wake.
	if grep -q 'moved aside before the wake' "$LABTMP/pmvm.log"; then _landed=after-the-wake
	elif [ -e $STATE ]; then _landed=before-the-move-aside
	else _landed=after-the-move-aside; fi
	lab "mx-$_kcase-landed=$_landed"
	for _f in "$STATE"*; do lab "mx-$_kcase: after the kill: $_f"; done
	if resume "$_kn"; then
		lab "mx-$_kcase-end=resumed"
		_p=$(grep -E -m1 "PMVM-GUEST pattern-verify [A-Za-z]+ .*round=$_kn " "$LABTMP/console.lines" | sed -n 's/.*pattern-verify \([A-Za-z]*\) .*/\1/p')
		lab "mx-$_kcase-pattern=$_p"
		return 0
	fi
	pmvm_wait 30
	sed "s/^/PMVM-LAB mx-$_kcase: /" "$LABTMP/pmvm.log"
	lab "mx-$_kcase-end=refused"
	return 1
}
# killed_save: pmvm suspend, then kill -9 of pmvm before any state is
# written; neither the state path nor the last spent state may resume.
killed_save() {
	run_cmd suspend pmvm suspend $VM --timeout 60s
	[ "$RC" = 0 ] || fail "pmvm suspend exited $RC: $OUT"
	kill -KILL "$PMVM_PID"
	pmvm_wait 30 || fail "pmvm did not exit after kill -9"
	mx_sum after-kill
	run_cmd mx-killed-save-new pmvm run /lab/guest.toml --incoming $STATE --log-level error
	mx_sum killed-save-new
	for _f in "$STATE".resumed-*; do _spent=$_f; done # the glob sorts: the newest last
	run_cmd mx-killed-save-old pmvm run /lab/guest.toml --incoming "$_spent" --log-level error
	mx_sum killed-save-old
}
n=1
while [ $n -le "$CYCLES" ]; do
	save $n
	if [ $n = 1 ]; then faults; fi
	if [ $n = "$CYCLES" ]; then
		killed_resume killed-resume $n /dev/dax0.0 || { lab "the guest was lost: the last cases do not run"; exit 0; }
	else
		resume $n || fail "the guest did not report resume $n after pmvm run --incoming"
	fi
	if [ $n = 1 ]; then second_pmvm; fi
	n=$((n+1))
done
disk_full $((CYCLES + 1))
killed_save
# killed-late-resume needs a guest again: a cold boot (the state is
# spent, so nothing forbids it), a save, then a resume killed once it
# has logged "state restored" (the memory's generation already advanced).
pmvm_start /lab/guest.toml
wait_for 'PMVM-GUEST ready' 600 || fail "the guest cold-booted after the killed save never got ready"
save late
if killed_resume killed-late-resume 1 'state restored' "$LABTMP/pmvm.log"; then pmvm_stop; fi
