// Package memspec is the vocabulary a VM's memory is described in, shared by
// the config (configs), the memory layer (pmem), the state file (state) and
// whoever prints a size: the Mode a VM must survive, the special backing
// names (anonymous, memfd), and sizes in binary units (ParseSize,
// FormatSize). Those packages must not import one another, so each used to
// keep its own copy; memspec imports nothing, which lets all of them use one
// definition.
package memspec
