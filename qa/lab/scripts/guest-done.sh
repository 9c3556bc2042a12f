# shellcheck shell=sh
# The end of the default guest /init (GuestInit): report done, power off.
echo "PMVM-GUEST done"
poweroff -f
