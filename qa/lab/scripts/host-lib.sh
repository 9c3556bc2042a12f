# shellcheck shell=sh
# Part of a lab host /init, after the prelude: what both lab host inits
# (host-init.sh, update-init.sh) do.

# fail MSG: the test fails at once on the ERROR line; the lab host powers off.
fail() { echo "PMVM-LAB ERROR: $*"; sleep 1; poweroff -f; }

# load_modules DIR: insmod every module DIR/load-order lists, one
# "FILE [PARAMETER...]" a line, in that order (dependencies first).
load_modules() {
	[ -f "$1/load-order" ] || fail "this image has no modules for kernel $(uname -r) ($1/load-order)"
	while read -r _mod _params; do
		# shellcheck disable=SC2086 # _params is insmod's module parameters, one a word
		insmod "$1/$_mod" $_params || fail "insmod $_mod on $(uname -r)"
	done < "$1/load-order"
}

# wait_kvm WHY: wait up to 5 s for /dev/kvm; fail with WHY if it does not come.
wait_kvm() {
	_i=0; while [ ! -c /dev/kvm ] && [ $_i -lt 50 ]; do sleep 0.1; _i=$((_i+1)); done
	[ -c /dev/kvm ] || fail "$1"
}

# kvmhold_start: start kvmhold (LabKVMHold: one idle VM for the lab host's
# life, so the tests' VMs never make the kernel patch its text; see
# qa/guestbin/kvmhold) and wait until it holds its VM.
kvmhold_start() {
	/bin/kvmhold /run/kvmhold.ready &
	_i=0; while [ ! -f /run/kvmhold.ready ] && [ $_i -lt 100 ]; do sleep 0.1; _i=$((_i+1)); done
	[ -f /run/kvmhold.ready ] || fail "kvmhold did not open its idle VM within 10 s"
}
