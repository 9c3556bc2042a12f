# shellcheck shell=sh
# The update lab's /init, the same on both kernels (updateInit in
# qa/lab/update.go), after the prelude and host-lib.sh. It reads the phase
# from the kernel command line (pmvm.phase=restore after the kexec) and
# loads the running kernel's modules (/lib/modules/<uname -r>/load-order).
# Parameters (set before it): STATE_MNT, LOG_DIR, VM_NAMES.
PHASE=boot
case " $(cat /proc/cmdline) " in *" pmvm.phase=restore "*) PHASE=restore;; esac
KVER=$(uname -r)
echo "PMVM-LAB init $KVER phase=$PHASE"
mkdir -p /var/run /run/pmvm /tmp "$STATE_MNT" "$LOG_DIR"
for n in $VM_NAMES; do mkdir -p "/run/pmvm/$n"; done
load_modules "/lib/modules/$KVER"
wait_kvm "/dev/kvm missing after loading the KVM modules of $KVER"
kvmhold_start
echo "PMVM-LAB kvm-ready"
sh /lab/scenario.sh $PHASE
echo "PMVM-LAB scenario-exit=$?"
poweroff -f
