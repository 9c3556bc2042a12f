#!/bin/busybox sh
# shellcheck shell=sh
# The start of every lab /init (lab host and guest): busybox applets, PATH,
# the pseudo filesystems and a console on stdio. Go puts the parts of an
# init one after the other (qa/lab/scripts.go), this one first.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s 2>/dev/null
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
