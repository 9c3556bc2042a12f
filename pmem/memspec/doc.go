// Package memspec is the vocabulary a VM's memory is described in, shared by
// the config (configs), the memory layer (pmem) and the state file (state).
// Those three must not import one another, so each used to keep its own
// copy; memspec imports nothing, which lets all of them use one definition.
package memspec
