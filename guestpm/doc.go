// Package guestpm is guest power management for pmvm: a client for the real
// qemu-guest-agent (qga) that runs in the guest on its second serial line
// (COM2, /dev/ttyS1, `qemu-ga -m isa-serial -p /dev/ttyS1`), and the two
// steps built on it: Suspend (ask the agent for S3, then wait until the
// machine is really in it) and SetTimeAfterWake. The runstate itself
// (created, running, suspended, waking, saving, ...) is the VMM's: the
// machine tracks it (vmm/runstate.go) and guestpm only reads it through the
// small Machine interface, so that guestpm never imports the VMM.
//
// # The wire
//
// qga speaks QMP-style JSON: one request object per command,
// {"execute":"guest-ping"} or {"execute":"...","arguments":{...}}, answered
// by one line {"return": ...} or {"error":{"class":"...","desc":"..."}}.
// A serial line is not a clean pipe: the agent may have restarted mid-reply,
// an earlier client may have left half a request or half a reply on the line,
// and boot junk or lost bytes happen. The protocol's answer, which this
// package follows, is guest-sync-delimited: the client sends a 0xFF byte
// (qga flushes its JSON parser on it) and then
// {"execute":"guest-sync-delimited","arguments":{"id":N}} with a random N;
// the agent answers 0xFF followed by {"return":N}. Everything that is not the
// answer carrying N is stale and dropped. The Client syncs before the first
// command on a connection and again after any error, timeout or suspend.
//
// Bytes from the line are split into messages by Decoder, a pure state
// machine (fuzzed by FuzzReplyParser) with a hard bound on message size, and
// replies are classified by ParseReply. One reader goroutine per Client feeds
// the Decoder, because the underlying reader may block forever; one writer
// goroutine performs writes, for the same reason. No call waits longer than its
// context deadline (5 s by default).
//
// # Suspend to RAM
//
// guest-suspend-ram sends no reply on success: the guest goes to sleep. So
// Client.SuspendRAM returns once the request is delivered and a short grace
// period passed without an error reply; the caller confirms the suspend by
// seeing the guest write SLP_TYP=S3|SLP_EN to PM1a_CNT: Suspend waits for
// that through Machine.WaitSuspended.
package guestpm
