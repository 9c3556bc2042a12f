#!/bin/busybox sh
# shellcheck shell=sh
# LabIdleInit, the unsaveable VM's init in the update lab: report once,
# then idle.
/bin/busybox mount -t proc proc /proc
echo "PMVM-GUEST idle uname=$(/bin/busybox uname -r)"
while :; do /bin/busybox sleep 3600; done
