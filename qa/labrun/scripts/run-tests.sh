# shellcheck shell=sh
# The lab host's /lab/scenario.sh when labrun runs a package's tests in it
# (scenario in qa/labrun/inlab.go): the facilities the tests need (cgroup
# v2, /dev/shm, an ext4 TMPDIR; KVM and huge pages come from the modules
# and the command line), then the test binary in its package's directory.
# Parameters (set before it): TEST_BIN, PKG_DIR, NONCE (marks this run's
# lines), SCRATCH (the scratch disk's mount point), LAB_KERNEL and
# LAB_PMVM (for $PMVM_TEST_KERNEL and $PMVM_TEST_PMVM), GUEST_KERNEL and
# GUEST_INITRD ("" without a Linux guest), DAX_DEV (/dev/dax0.0, which
# lib.sh's dax_setup makes; "" without device-dax); "$@" are the test
# binary's flags.
fail() { echo "PMVM-LAB ERROR: $*"; exit 1; }
if [ -n "$GUEST_KERNEL" ]; then
	export PMVM_TEST_GUEST_KERNEL="$GUEST_KERNEL" PMVM_TEST_GUEST_INITRD="$GUEST_INITRD"
fi
if [ -n "$DAX_DEV" ]; then
	# dax_setup makes /dev/dax0.0 from the memmap= region.
	# shellcheck source=SCRIPTDIR/../../lab/scripts/lib.sh
	. /lab/lib.sh
	dax_setup
	export PMVM_TEST_DAX="$DAX_DEV"
fi

mkdir -p /dev/shm "$SCRATCH" /root
mount -t tmpfs -o mode=1777,size=90% tmpfs /dev/shm || fail "mount tmpfs /dev/shm"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2 /sys/fs/cgroup"
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mount -t ext4 /dev/vda "$SCRATCH" || fail "mount the ext4 scratch disk /dev/vda on $SCRATCH"
mkdir -p "$SCRATCH/tmp" "$SCRATCH/var-tmp" /var && chmod 1777 "$SCRATCH/tmp" "$SCRATCH/var-tmp"
ln -sfn "$SCRATCH/var-tmp" /var/tmp
cd "$PKG_DIR" || fail "no $PKG_DIR in the lab host image"
export TMPDIR="$SCRATCH/tmp" HOME=/root PMVM_LABRUN_INSIDE=1 PMVM_TEST_KERNEL="$LAB_KERNEL" PMVM_TEST_PMVM="$LAB_PMVM"
dmesg -c > /dev/null # what the kernel says from here on is the tests' business
echo "PMVM-LABRUN begin $NONCE (Linux $(uname -r), $(nproc) CPUs, 1GiB pages: $(cat /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages 2>/dev/null || echo none), cgroup2: $(cat /sys/fs/cgroup/cgroup.controllers))"
"$TEST_BIN" "$@"
echo "PMVM-LABRUN exit $NONCE $?"
dmesg | awk '/WARNING: CPU: |BUG: |Oops: |general protection fault/ {n = 30} n > 0 {print "PMVM-LABRUN dmesg: " $0; n--}'
echo "PMVM-LABRUN dmesg-end $NONCE"
