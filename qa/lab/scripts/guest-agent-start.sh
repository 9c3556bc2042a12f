# shellcheck shell=sh
# Part of a guest /init (GuestAgentStart in qa/lab/guestinit.go): starts
# Debian's qemu-ga on COM2 and sets QGA_PID.
mkdir -p /run /var/run
if [ ! -c /dev/ttyS1 ]; then echo "PMVM-GUEST ERROR: no /dev/ttyS1 for qemu-ga (COM2 missing?)"; fi
qemu-ga -m isa-serial -p /dev/ttyS1 -t /run -f /run/qemu-ga.pid &
QGA_PID=$!
sleep 0.5
if kill -0 "$QGA_PID" 2>/dev/null; then
	echo "PMVM-GUEST qga-started pid=$QGA_PID"
else
	echo "PMVM-GUEST ERROR: qemu-ga exited at start (see its messages above)"
fi
