# shellcheck shell=sh
# The body of LocateGuestInit (qa/lab/guestinit.go), after the prelude,
# the report and guest-lib.sh. Parameter: SEED.
echo 0 > /proc/sys/vm/compact_unevictable_allowed 2>/dev/null
pattern locate --seed "$SEED" --ready /tmp/located &
wait_file /tmp/located located 120 || echo "PMVM-GUEST ERROR: pattern locate did not finish"
echo "PMVM-GUEST done"
poweroff -f
