// Package kexec drives a host kernel update: it plans which VMs to carry
// over and refuses before touching anything when one cannot be (plan.go),
// saves every VM in parallel, loads the new kernel with kexec_file_load
// and reboots into it, rolling everything back if any step fails
// (update.go, load.go); after the boot it restores every saved VM as a
// detached pmvm in its own cgroup (restore.go, with vmm/cgroup) and prints the
// timeline across the kexec with each VM's blackout (timeline.go). Hooks
// run around the update with a timeout that kills their process group
// (hooks.go).
//
// Files of a host update, all in the host config's state_dir (which must
// survive the kexec): <name>.state for each VM, renamed
// <name>.state.resumed-<time> once the VM runs again (never deleted), and
// update-timeline.json, archived as update-timeline-<id>.json when every
// VM is back. Logs go to log_dir: host.log and <name>.log per restored VM.
package kexec
