# shellcheck shell=sh
# Part of a guest /init: the PMVM-GUEST marker lines of GuestInit.
echo "PMVM-GUEST uname=$(uname -r)"
echo "PMVM-GUEST cpus-online=$(cat /sys/devices/system/cpu/online)"
echo "PMVM-GUEST memtotal-kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
acpi_re='ACPI.*(Error|error|BUG|Exception)'
echo "PMVM-GUEST acpi-errors=$(dmesg | grep -cE "$acpi_re")"
dmesg | grep -E "$acpi_re" | sed 's/^/PMVM-GUEST acpi-error: /'
