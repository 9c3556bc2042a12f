#!/bin/bash
# Boot a stock Debian kernel on QEMU (TCG, no KVM needed) with pmvm's ACPI
# tables instead of QEMU's, using QEMU's PIIX4 PM1 block at 0x600 (the same
# ports as acpi.DefaultConfig) as the legacy hardware, then power off via \_S5.
# A manual check, minutes long under TCG; not run by `go test`.
#
#   vmm/acpi/testdata/qemu-boot.sh /path/to/vmlinuz [workdir]
#
# Needs qemu-system-x86 (with qboot.rom) and busybox (static). Passes when
# Linux logs no ACPI error or warning, finds the 4 PNP devices, supports
# S0 S3 S5 and powers the machine off through our \_S5. The tables sit at
# 0x10000000 (given with acpi_rsdp=) because qboot fills 0xD0000-0xEFFFF with
# QEMU's own tables.
set -euo pipefail
kernel=${1:?usage: qemu-boot.sh VMLINUZ [WORKDIR]}
work=${2:-$(mktemp -d)}
here=$(cd "$(dirname "$0")/../../.." && pwd)
base=0x10000000

mkdir -p "$work/initrd/bin" "$work/initrd/proc" "$work/initrd/sys"
cp "$(command -v busybox)" "$work/initrd/bin/busybox"
cat > "$work/initrd/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
for d in /sys/bus/pnp/devices/*; do echo "PNP $(/bin/busybox cat $d/id): $(/bin/busybox cat $d/resources | /bin/busybox tr '\n' ' ')"; done
/bin/busybox poweroff -f
INIT
chmod +x "$work/initrd/init"
(cd "$work/initrd" && find . | busybox cpio -o -H newc > "$work/initrd.cpio" 2>/dev/null)

(cd "$here" && go test ./vmm/acpi -run TestDumpTables -count=1 -args -dump "$work/tables" -dump-base $base -dump-piix4 >/dev/null)

timeout 600 qemu-system-x86_64 -M pc -bios /usr/share/qemu/qboot.rom -accel tcg -cpu max -smp 2 -m 512 \
  -nographic -no-reboot -kernel "$kernel" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 ignore_loglevel panic=-1 nokaslr acpi_rsdp=$base" \
  -device loader,file="$work/tables/image.bin",addr=$base,force-raw=on > "$work/boot.log" 2>&1

fail=0
if grep -E 'ACPI (BIOS )?(Error|Warning)|Firmware (Warning|Error)|ACPI Exception' "$work/boot.log"; then fail=1; fi
for want in 'ACPI: RSDP 0x0000000010000000 000024 (v02 PMVM  )' 'ACPI: PM: (supports S0 S3 S5)' \
    'pnp: PnP ACPI: found 4 devices' 'ACPI: PM: Preparing to enter system sleep state S5' 'reboot: Power down'; do
  grep -qF "$want" "$work/boot.log" || { echo "missing: $want"; fail=1; }
done
echo "log: $work/boot.log"
[ $fail = 0 ] && echo PASS || { echo FAIL; exit 1; }
