// Package state will hold the pmvm state file: magic, format version, named
// sections keyed by machine topology, checksum, size cap and atomic durable
// writes (see ../DESIGN.md, "State format principles"). It is filled in by
// the reboot-mode issue; nothing imports it yet.
package state
