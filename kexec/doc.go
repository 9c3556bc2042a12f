// Package kexec will drive a host kernel update: save every VM, load the
// new kernel with kexec_file_load, reboot into it and restore the VMs. It is
// filled in by the host-update issue; nothing imports it yet.
package kexec
