# shellcheck shell=sh
# KVMCheckScenario: only shows that nested KVM works in the lab host.
ls -l /dev/kvm
echo "PMVM-LAB nested=$(cat /sys/module/kvm_amd/parameters/nested)"
echo "PMVM-LAB npt=$(cat /sys/module/kvm_amd/parameters/npt)"
