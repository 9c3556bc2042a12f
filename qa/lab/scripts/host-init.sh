# shellcheck shell=sh
# The standard lab host's /init (Lab.Host in qa/lab/images.go), after the
# prelude and host-lib.sh. Parameter (set before it): RUN_DIRS, the VMs'
# runtime directories. Modules: /lib/modules/load-order.
echo "PMVM-LAB init $(uname -r)"
mkdir -p /var/run /run/pmvm /tmp
for d in $RUN_DIRS; do mkdir -p "$d"; done
load_modules /lib/modules
wait_kvm "/dev/kvm missing after loading the KVM modules (is SVM exposed? -cpu EPYC,+svm)"
kvmhold_start
echo "PMVM-LAB kvm-ready"
sh /lab/scenario.sh
echo "PMVM-LAB scenario-exit=$?"
poweroff -f
