# shellcheck shell=sh
# TestLabBoot's lab host script (PmvmRunScenario): run the guest under pmvm.
/bin/pmvm run /lab/guest.toml; echo "PMVM-LAB pmvm-exit=$?"
