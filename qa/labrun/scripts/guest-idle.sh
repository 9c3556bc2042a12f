# shellcheck shell=sh
# The end of LinuxGuest's /init (guestInit in qa/labrun/inlab.go), after
# the lab's prelude and qemu-ga start: say ready, then idle.
echo "PMVM-GUEST ready"
while :; do sleep 3600; done
