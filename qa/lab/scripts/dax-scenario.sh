# shellcheck shell=sh
# TestLabDax's lab host script (DaxScenario in qa/lab/scenario.go).
# Parameter (set before it): COLD_BOOTS.
# shellcheck source=SCRIPTDIR/lib.sh
. /lab/lib.sh
dax_setup
dax_config /lab/guest.toml
run_cmd check-dax pmvm check /lab/guest.toml
run_cmd check-anon pmvm check /lab/anon-reboot.toml
pmvm_start /lab/guest.toml
wait_for 'PMVM-GUEST pattern-gpa=0x[0-9a-f]+ marker=[0-9a-f]+' 240 || fail "the guest never printed its pattern's address"
gpa=$(echo "$GOT" | sed -n 's/.*pattern-gpa=\(0x[0-9a-f]*\).*/\1/p')
pmvm_wait 120 || fail "pmvm did not exit after the guest powered off"
daxpeek /dev/dax0.0 "$gpa" 32 || fail "daxpeek /dev/dax0.0 $gpa 32 failed"
# Cold boots over the memory the guest above left on the namespace
# (persistent memory keeps it): each must boot and report as the first did.
n=1
while [ "$n" -le "$COLD_BOOTS" ]; do
	pmvm_start /lab/guest.toml
	wait_for 'PMVM-GUEST done' 240 || fail "cold boot $n over the memory a guest left on /dev/dax0.0: the guest did not finish"
	pmvm_wait 120 || fail "cold boot $n over the memory a guest left: pmvm did not exit after the guest powered off"
	lab "coldboot-again n=$n exit=$PMVM_RC"
	n=$((n+1))
done
