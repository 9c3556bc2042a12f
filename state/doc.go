// Package state is the pmvm state file: the small part of a machine that is
// not guest RAM (device registers, runstate, clock, later vCPU and irqchip
// state in restart mode), written when a VM is saved and read when a new
// pmvm process resumes it. Its principles, each detailed below: one format
// for reboot and restart mode (restart only adds sections); sections keyed
// by topology, never by creation order; magic, version, checksums and a
// size cap checked before anything is allocated, and a refused file never
// partly returned; an atomic, durable write.
//
// The container knows nothing about machines: it holds a header and named,
// versioned sections whose payloads the caller encodes (JSON for records,
// through AddJSON and Section.DecodeJSON). Section names are topology keys
// ("machine", "vcpu/0", "uart@0x3f8", "memory/ram0", "clock"), never creation
// order, so a renumbered device cannot load another device's state.
//
// # Layout (format 1.0, all integers little-endian)
//
//	offset  size  field
//	     0     8  magic "PMVMSTAT"
//	     8     2  format major (u16); a major this pmvm does not know is refused
//	    10     2  format minor (u16); any minor of a known major is read
//	    12     8  total file length in bytes, trailer included (u64)
//	    20     4  CRC-32C (Castagnoli) of bytes 0..19
//	    24     4  header block length H (u32)
//	    28     H  header block:
//	                8  created, Unix seconds (i64)
//	                4  created, nanoseconds (u32, < 1e9)
//	               32  config fingerprint (SHA-256, computed by package configs)
//	              2+n  pmvm version (u16 length, UTF-8)
//	              2+n  VM name      (u16 length, UTF-8)
//	              2+n  mode         (u16 length, "reboot" or "restart")
//	                   a newer minor may append fields; readers skip to 28+H
//	  28+H     4  section count N (u32, at most MaxSections)
//	               N times, in file order:
//	                1  name length (u8, 1..64)
//	                n  name, [a-z0-9@/_.:-]+, unique in the file
//	                4  section version (u32)
//	                8  payload length (u64)
//	                p  payload
//	 len-32   32  SHA-256 of bytes 0..len-33 (everything before it)
//
// # Reading order
//
// Decode refuses before it allocates anything proportional to a length
// field: the input size against the cap, the magic, the major version, the
// fixed-header CRC (so a flipped bit in the length field reads as corruption,
// not truncation), the total length against the cap and the input, the
// SHA-256 trailer, and only then the header and sections, every length
// checked against the bytes that remain. A refused file is never partly
// returned.
//
// # Compatibility
//
// Adding a section, or a field at the end of the header block, is a minor
// version bump: older readers keep unknown sections (listed by Describe,
// ignored unless a restorer asks for them with Section or Need). Anything
// else is a new major. Each section carries its own version for its payload;
// Need refuses a section newer than the restorer understands. Restart mode
// only adds sections.
//
// # Writing
//
// WriteFile is atomic and durable: a temporary file in the target's
// directory (O_EXCL, 0600), fsync, rename over the target, fsync of the
// directory. A crash at any moment leaves the previous file or the new one.
package state
