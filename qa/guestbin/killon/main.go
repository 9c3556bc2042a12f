// Command killon runs in the lab host (static, CGO_ENABLED=0) and kills a
// process with SIGKILL the moment it has mapped a given file, to inject a
// crash at an exact step (the fault matrix: a resuming pmvm killed right
// after it mapped guest memory, before its vCPUs run):
//
//	killon PID|PIDFILE SUBSTRING TIMEOUT_SECONDS [FILE]
//	PMVM-LAB killon pid=<pid> seen=<substring> in=<file> after_ms=<ms> killed=yes
//
// Given a PIDFILE, it waits for the file to hold a pid first: started
// before the process, it cannot miss a step taken in its first
// milliseconds (pmvm resumes a guest in about 100 ms).
//
// It polls FILE (default /proc/PID/maps; a log file kills at a logged
// step) about every 200 µs: a shell loop forks far too slowly to hit a
// window of milliseconds. It exits 1 if the process
// exited or the timeout passed first, saying which.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) != 4 && len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: killon PID SUBSTRING TIMEOUT_SECONDS [FILE]")
		os.Exit(2)
	}
	secs, err := strconv.Atoi(os.Args[3])
	if err != nil || secs <= 0 {
		fmt.Fprintln(os.Stderr, "killon: TIMEOUT_SECONDS must be a positive integer")
		os.Exit(2)
	}
	pid, err := strconv.Atoi(os.Args[1])
	if err != nil {
		if pid, err = waitPidFile(os.Args[1], time.Duration(secs)*time.Second); err != nil {
			fmt.Printf("PMVM-LAB killon-error: %v\n", err)
			os.Exit(1)
		}
	}
	file := fmt.Sprintf("/proc/%d/maps", pid)
	if len(os.Args) == 5 {
		file = os.Args[4]
	}
	if err := killOn(pid, file, []byte(os.Args[2]), time.Duration(secs)*time.Second); err != nil {
		fmt.Printf("PMVM-LAB killon-error: %v\n", err)
		os.Exit(1)
	}
}

func killOn(pid int, file string, want []byte, timeout time.Duration) error {
	t0 := time.Now()
	for time.Since(t0) < timeout {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("read %s (has pid %d exited?): %v", file, pid, err)
		}
		if unix.Kill(pid, 0) != nil {
			return fmt.Errorf("pid %d exited before %s showed %q", pid, file, want)
		}
		if bytes.Contains(b, want) {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil {
				return fmt.Errorf("kill -9 %d: %w", pid, err)
			}
			fmt.Printf("PMVM-LAB killon pid=%d seen=%q in=%s after_ms=%d killed=yes\n", pid, want, file, time.Since(t0).Milliseconds())
			return nil
		}
		time.Sleep(200 * time.Microsecond)
	}
	return fmt.Errorf("%s did not show %q within %v", file, want, timeout)
}

// waitPidFile polls path until it holds a positive pid.
func waitPidFile(path string, timeout time.Duration) (int, error) {
	for t0 := time.Now(); time.Since(t0) < timeout; time.Sleep(200 * time.Microsecond) {
		b, err := os.ReadFile(path)
		if err != nil || !bytes.HasSuffix(b, []byte("\n")) {
			continue // not there yet, or not written in full
		}
		if pid, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && pid > 0 {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no pid in %s within %v", path, timeout)
}
