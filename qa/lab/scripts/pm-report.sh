# shellcheck shell=sh
# Part of a guest /init (PMReport in qa/lab/guestinit.go): what S3 needs
# from the guest kernel.
echo "PMVM-GUEST power-state=$(cat /sys/power/state 2>/dev/null)"
echo "PMVM-GUEST mem-sleep=$(cat /sys/power/mem_sleep 2>/dev/null)"
echo "PMVM-GUEST boot_id=$(cat /proc/sys/kernel/random/boot_id)"
