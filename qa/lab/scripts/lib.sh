# shellcheck shell=sh
# /lab/lib.sh: helpers for lab scenarios; a scenario starts with
# ". /lab/lib.sh". What each helper does: ScenarioLib in qa/lab/scenario.go.
LABTMP=${LABTMP:-/tmp}
CONSOLE=${CONSOLE:-$LABTMP/console.log}
GUEST_FAIL_RE=${GUEST_FAIL_RE:-'PMVM-GUEST ERROR|pattern-verify BAD|pattern-error|Kernel panic'}
PMVM_PID=
lab() { echo "PMVM-LAB $*"; }
fail() {
	echo "PMVM-LAB ERROR: $*"
	if pmvm_running; then kill -TERM "$PMVM_PID" 2>/dev/null; sleep 1; fi
	exit 1
}
now() { date +%s; }
pmvm_running() { [ -n "$PMVM_PID" ] && [ ! -e "$LABTMP/pmvm.rc" ]; }
pmvm_start() {
	rm -f "$LABTMP/pmvm.pid" "$LABTMP/pmvm.rc"
	: > "$CONSOLE"
	: > "$LABTMP/pmvm.log"
	# pmvm's own log (stderr) goes to its own file: written a line at a
	# time, it would otherwise land in the middle of a guest console line,
	# which the UART writes a byte at a time. Both are relayed.
	[ -n "$LOG_RELAY" ] && kill "$LOG_RELAY" 2>/dev/null
	tail -f "$LABTMP/pmvm.log" | sed -e 's/^/[l2] /' &
	LOG_RELAY=$!
	( pmvm run "$@" </dev/null 2>>"$LABTMP/pmvm.log" & echo $! > "$LABTMP/pmvm.pid"; wait $!; echo $? > "$LABTMP/pmvm.rc" ) \
		| tee -a "$CONSOLE" | sed -e 's/\r$//' -e 's/^/[l2] /' &
	_i=0
	while [ ! -s "$LABTMP/pmvm.pid" ] && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i+1)); done
	PMVM_PID=$(cat "$LABTMP/pmvm.pid" 2>/dev/null)
	[ -n "$PMVM_PID" ] || fail "pmvm run $* did not start"
	lab "pmvm-started pid=$PMVM_PID args=$*"
}
# complete_lines: a snapshot of $CONSOLE without its last line if that one
# is still being written (the guest's UART sends a byte at a time).
complete_lines() {
	cp "$CONSOLE" "$LABTMP/console.snap" 2>/dev/null || return 0
	if [ "$(tail -c 1 "$LABTMP/console.snap" | od -An -tx1 | tr -d ' \n')" = 0a ]; then
		cat "$LABTMP/console.snap"
	else
		sed '$d' "$LABTMP/console.snap"
	fi
}
wait_for() {
	_pat=$1
	_end=$(( $(now) + ${2:-60} ))
	while :; do
		_exited=0
		[ -e "$LABTMP/pmvm.rc" ] && _exited=1
		complete_lines > "$LABTMP/console.lines"
		GOT=$(grep -E -m1 -- "$_pat" "$LABTMP/console.lines" | tr -d '\r')
		if [ -n "$GOT" ]; then echo "PMVM-LAB got: $GOT"; return 0; fi
		_bad=$(grep -E -m1 -- "$GUEST_FAIL_RE" "$LABTMP/console.lines" | tr -d '\r')
		if [ -n "$_bad" ]; then lab "wait_for /$_pat/: guest failed: $_bad"; return 1; fi
		if [ $_exited = 1 ]; then
			lab "wait_for /$_pat/: pmvm exited with $(cat "$LABTMP/pmvm.rc") first"
			return 1
		fi
		if [ "$(now)" -ge "$_end" ]; then lab "wait_for /$_pat/: no such line within ${2:-60}s"; return 1; fi
		sleep 0.2
	done
}
pmvm_wait() {
	_end=$(( $(now) + ${1:-60} ))
	while [ ! -e "$LABTMP/pmvm.rc" ]; do
		if [ "$(now)" -ge "$_end" ]; then
			lab "pmvm still running after ${1:-60}s: killing it"
			kill -KILL "$PMVM_PID" 2>/dev/null
			sleep 1
			return 1
		fi
		sleep 0.2
	done
	PMVM_RC=$(cat "$LABTMP/pmvm.rc")
	sleep 1 # let the relay print the console's last lines first
	lab "pmvm-exit=$PMVM_RC"
}
pmvm_stop() {
	pmvm_running && kill -TERM "$PMVM_PID"
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
	[ "$RC" = 0 ] || fail "ndctl create-namespace -f -e namespace0.0 -m devdax exited $RC"
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
