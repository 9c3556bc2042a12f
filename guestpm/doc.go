// Package guestpm will hold guest power management: the qemu-guest-agent
// client on COM2 and the ACPI S3 suspend/wake state machine. It is filled in
// by the S3 issue; nothing imports it yet.
package guestpm
