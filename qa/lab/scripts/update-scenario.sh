# shellcheck shell=sh
# The update lab's /lab/scenario.sh PHASE (UpdateScenario in
# qa/lab/update.go: what it prints, and why the guests boot one after
# the other). Parameters (set before it): VMS, DAXES, VM_DIR, STATE_MNT,
# STATE_DIR, STATE_DEV, UPDATE_OUT, LOG_DIR, NEW_KERNEL, SELF_INITRD,
# NEW_CMDLINE, TO_VERSION, VOLATILE_VM, HOST_CONFIG.
# shellcheck source=SCRIPTDIR/lib.sh
. /lab/lib.sh
PHASE=$1
hrnow() { adjtimex | awk '/tv_sec/ {s=$2} /tv_usec/ {u=$2} END {printf "%d.%06d", s, u}'; }
l1_facts() { lab "l1 phase=$PHASE uname=$(uname -r) date=$(hrnow) uptime=$(cut -d' ' -f1 /proc/uptime)"; }
# use NAME [CONSOLE]: point lib.sh's wait_for at VM NAME's console.
use() {
	LABTMP=/tmp/vm/$1
	mkdir -p "$LABTMP"
	CONSOLE=${2:-$LABTMP/console.log}
	PMVM_PID=$(cat "$LABTMP/pmvm.pid" 2>/dev/null)
}
# vm_start NAME: pmvm run VM_DIR/NAME.toml in the background, its output
# in /tmp/vm/NAME/console.log and relayed as "[NAME] ".
vm_start() {
	use "$1"
	rm -f "$LABTMP/pmvm.pid" "$LABTMP/pmvm.rc"
	: > "$CONSOLE"
	( pmvm run "$VM_DIR/$1.toml" </dev/null & echo $! > "$LABTMP/pmvm.pid"; wait $!; echo $? > "$LABTMP/pmvm.rc" ) 2>&1 \
		| tee -a "$CONSOLE" | sed -e 's/\r$//' -e "s/^/[$1] /" &
	_i=0
	while [ ! -s "$LABTMP/pmvm.pid" ] && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i+1)); done
	PMVM_PID=$(cat "$LABTMP/pmvm.pid" 2>/dev/null)
	[ -n "$PMVM_PID" ] || fail "pmvm run $VM_DIR/$1.toml did not start"
	lab "vm-started name=$1 pid=$PMVM_PID"
}
# vm_watch TAG NAME CONSOLE SECS ERE [ERE2]: in the background, wait for ERE
# (then ERE2) in NAME's console and print
# "PMVM-LAB TAG vm=NAME l1-date=<when ERE was seen> [<ERE2's line>] <ERE's line>".
WATCHERS=
vm_watch() {
	( use "$2" "$3"
	  wait_for "$5" "$4" || { lab "$1 vm=$2 FAILED: no /$5/ within $4 s"; exit 1; }
	  _seen=$(now) _line=${GOT#*PMVM-GUEST }
	  if [ -n "$6" ]; then wait_for "$6" 30 || { lab "$1 vm=$2 FAILED: no /$6/"; exit 1; }; _line="${GOT#*PMVM-GUEST } $_line"; fi
	  lab "$1 vm=$2 l1-date=$_seen $_line" ) &
	WATCHERS="$WATCHERS $!"
}
# joined WHAT: wait for every watcher; fail if one failed.
joined() {
	_bad=0
	for _w in $WATCHERS; do wait "$_w" || _bad=1; done
	WATCHERS=
	[ $_bad = 0 ] || fail "$1"
}
dax_facts() {
	for d in $DAXES; do
		_i=0
		while [ ! -c "/dev/$d" ] && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i+1)); done
		[ -c "/dev/$d" ] || fail "no /dev/$d ($PHASE phase)"
		_sys=$(readlink -f "/sys/bus/dax/devices/$d")
		_size=$(cat "$_sys/size")
		lab "dax name=$d size=$_size uuid=$(cat "$_sys/../uuid" 2>/dev/null)"
		for c in "$VM_DIR"/*.toml; do sed -i "s/@SIZE_$(echo "$d" | tr . _)@/$_size/g" "$c"; done
	done
}
state_mount() {
	_i=0
	while [ ! -b "$STATE_DEV" ] && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i+1)); done
	[ -b "$STATE_DEV" ] || fail "no $STATE_DEV (the third memmap= region, raw pmem) in the $PHASE phase"
	if [ "$1" = mkfs ]; then
		run_cmd mkfs mke2fs -F -L pmvm-state "$STATE_DEV"
		[ "$RC" = 0 ] || fail "mke2fs $STATE_DEV exited $RC"
	fi
	mount -t ext2 "$STATE_DEV" "$STATE_MNT" || fail "mount -t ext2 $STATE_DEV $STATE_MNT failed ($PHASE phase)"
	mkdir -p "$STATE_DIR"
	lab "state-fs dev=$STATE_DEV type=$(awk -v m="$STATE_MNT" '$2 == m {print $3}' /proc/mounts) size-kb=$(df -k "$STATE_MNT" | awk 'NR==2 {print $2}')"
}
# names PATH...: the base names of the PATHs that exist, each followed by
# a space (a glob that matched nothing gives nothing).
names() { for _f in "$@"; do [ -e "$_f" ] && printf '%s ' "${_f##*/}"; done; }
cgroup_mount() {
	mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount -t cgroup2 /sys/fs/cgroup failed"
	lab "cgroup2 controllers=$(tr ' ' , < /sys/fs/cgroup/cgroup.controllers)"
}

boot_phase() {
	l1_facts
	_n=0
	for _d in $DAXES; do
		_i=0
		while [ ! -b "/dev/pmem$_n" ] && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i+1)); done
		[ -b "/dev/pmem$_n" ] || fail "no /dev/pmem$_n: are the memmap= regions on the command line and nd_e820 loaded?"
		run_cmd "ndctl-$_n" ndctl create-namespace -f -e "namespace$_n.0" -m devdax
		[ "$RC" = 0 ] || fail "ndctl create-namespace -f -e namespace$_n.0 -m devdax exited $RC"
		_n=$((_n+1))
	done
	dax_facts
	state_mount mkfs
	cgroup_mount
	# One guest after the other: two guests booting and filling their
	# memory at once make the nested TCG lab itself flaky (UpdateScenario).
	for v in $VMS; do
		vm_start "$v"
		vm_watch vm-ready "$v" "/tmp/vm/$v/console.log" 600 'PMVM-GUEST ready' 'PMVM-GUEST boot_id='
		joined "guest $v never got ready (qemu-ga + pattern fill)"
	done
	# Each pmvm's cgroup: the restored one must be the same after the kexec.
	for v in $VMS; do
		use "$v"
		lab "cgroup-before vm=$v pid=$PMVM_PID cgroup=$(sed -n 's/^0:://p' "/proc/$PMVM_PID/cgroup")"
	done

	# A VM that cannot survive the kexec: the update must refuse at once.
	vm_start "$VOLATILE_VM"
	vm_watch vm-ready "$VOLATILE_VM" "/tmp/vm/$VOLATILE_VM/console.log" 300 'PMVM-GUEST idle'
	joined "the $VOLATILE_VM guest never came up"
	run_cmd refuse pmvm host update --kernel "$NEW_KERNEL" --initrd "$SELF_INITRD" --cmdline "$NEW_CMDLINE"
	[ "$RC" = 1 ] || fail "pmvm host update with VM $VOLATILE_VM running exited $RC, want 1 (refused)"
	for v in $VMS; do run_cmd "refuse-status-$v" pmvm status "$v"; done
	_states=0
	for _f in "$STATE_DIR"/*.state; do [ -e "$_f" ] && _states=$((_states+1)); done
	lab "after-refusal state-files=$_states kexec-loaded=$(cat /sys/kernel/kexec_loaded)"
	use "$VOLATILE_VM"
	pmvm_stop
	lab "stopped vm=$VOLATILE_VM exit=$PMVM_RC"

	# The update. Its output goes to the state filesystem (the kexec cuts a
	# pipe short); the new kernel prints it in full.
	lab "update-start l1-date=$(hrnow)"
	pmvm host update --kernel "$NEW_KERNEL" --initrd "$SELF_INITRD" --cmdline "$NEW_CMDLINE" > "$UPDATE_OUT" 2>&1 &
	_upd=$!
	tail -f "$UPDATE_OUT" | sed 's/^/[update] /' &
	wait $_upd
	_rc=$?
	sleep 1
	sed 's/^/PMVM-LAB update: /' "$UPDATE_OUT"
	fail "pmvm host update exited $_rc and this kernel still runs"
}

restore_phase() {
	l1_facts
	[ "$(uname -r)" = "$TO_VERSION" ] || lab "WARNING: running $(uname -r), the update was to $TO_VERSION"
	dax_facts
	state_mount
	cgroup_mount
	lab "state-files-at-boot $(names "$STATE_DIR"/*)"
	# The guests first; the story after.
	run_cmd restore pmvm host restore --config "$HOST_CONFIG"
	[ -f "$UPDATE_OUT" ] || fail "$UPDATE_OUT did not survive the kexec"
	sed 's/^/PMVM-LAB update: /' "$UPDATE_OUT"
	lab "update-output-end lines=$(wc -l < "$UPDATE_OUT")"
	[ "$RC" = 0 ] || fail "pmvm host restore exited $RC"
	# pmvm host restore gives each VM's pmvm log and guest console a file
	# of its own in log_dir; both are relayed.
	for v in $VMS; do
		tail -n +1 -f "$LOG_DIR/$v.log" | sed -e "s/^/[$v] pmvm: /" &
		tail -n +1 -f "$LOG_DIR/$v.console.log" | sed -e 's/\r$//' -e "s/^/[$v] /" &
		vm_watch resumed "$v" "$LOG_DIR/$v.console.log" 300 'PMVM-GUEST resumed n=1 '
	done
	joined "a guest did not report its resume after pmvm host restore"
	for v in $VMS; do vm_watch verified "$v" "$LOG_DIR/$v.console.log" 600 'PMVM-GUEST pattern-verify [A-Za-z]+ .*round=1 '; done
	joined "a guest's pattern check did not finish"
	for p in $(pidof pmvm); do
		lab "proc pid=$p config=$(tr '\0' '\n' < "/proc/$p/cmdline" | sed -n 3p) cgroup=$(sed -n 's/^0:://p' "/proc/$p/cgroup")"
	done
	for v in $VMS; do run_cmd "after-status-$v" pmvm status "$v"; done
	lab "state-dir $(names "$STATE_DIR"/*)"
	sed 's/^/PMVM-LAB hooks: /' "$STATE_MNT/hooks.log" 2>/dev/null
	for p in $(pidof pmvm); do kill -TERM "$p"; done
	sleep 1
	umount "$STATE_MNT"
}

case $PHASE in
boot) boot_phase ;;
restore) restore_phase ;;
*) fail "unknown phase $PHASE" ;;
esac
