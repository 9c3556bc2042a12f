# shellcheck shell=sh
# Part of a guest /init: the PMVM-GUEST marker lines of GuestInit, and
# health_report, the guest's own health as lab.GuestHealthProblems judges
# it (run here after boot, and by pm-guest.sh after every resume).
echo "PMVM-GUEST uname=$(uname -r)"
echo "PMVM-GUEST cpus-online=$(cat /sys/devices/system/cpu/online)"
echo "PMVM-GUEST memtotal-kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
acpi_re='ACPI.*(Error|error|BUG|Exception)'
echo "PMVM-GUEST acpi-errors=$(dmesg | grep -cE "$acpi_re")"
dmesg | grep -E "$acpi_re" | sed 's/^/PMVM-GUEST acpi-error: /'
# health_report WHEN: the kernel's taint flags and every dmesg line of a
# WARNING, BUG, Oops or RCU stall (the guests boot with quiet, so these
# are not on the console). Matched at the start of the message: a WARN()
# prints "WARNING: CPU: n PID: n at ...", while a plain message may say
# "...: WARNING: See ..." (as the SRSO mitigation notice does).
health_report() {
	_re='^(\[[ 0-9.]*\] )?(WARNING: CPU|BUG:|kernel BUG at|Oops|rcu: INFO: .*stall|XSAVE consistency problem)'
	echo "PMVM-GUEST health when=$1 tainted=$(cat /proc/sys/kernel/tainted) problems=$(dmesg | grep -cE "$_re")"
	dmesg | grep -E "$_re" | head -n 20 | sed "s/^/PMVM-GUEST health-problem when=$1: /"
}
health_report boot
