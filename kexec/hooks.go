package kexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/configs"
)

// Environment variables a hook is given, besides pmvm's own environment.
const (
	EnvPhase    = "PMVM_PHASE"    // pre-save | pre-kexec | post-restore | on-failure
	EnvVM       = "PMVM_VM"       // the VM names, comma-separated (post-restore: the one VM)
	EnvState    = "PMVM_STATE"    // their state file paths, comma-separated, same order as PMVM_VM
	EnvKernel   = "PMVM_KERNEL"   // the kernel being kexec'd (update phases; empty at restore)
	EnvTimeline = "PMVM_TIMELINE" // the timeline file
	EnvError    = "PMVM_ERROR"    // on-failure: what went wrong
)

// HookEnv is what a hook is told.
type HookEnv struct {
	Phase    string
	VMs      []string
	States   []string
	Kernel   string
	Timeline string
	Error    string // on-failure only
}

// Environ returns the PMVM_* variables of e.
func (e HookEnv) Environ() []string {
	env := []string{
		EnvPhase + "=" + e.Phase,
		EnvVM + "=" + strings.Join(e.VMs, ","),
		EnvState + "=" + strings.Join(e.States, ","),
		EnvKernel + "=" + e.Kernel,
		EnvTimeline + "=" + e.Timeline,
	}
	if e.Phase == configs.PhaseOnFailure {
		env = append(env, EnvError+"="+strings.ReplaceAll(e.Error, "\n", "; "))
	}
	return env
}

// hookKillGrace is how long a killed hook's output pipe may stay open (a
// descendant that escaped the process group) before pmvm stops waiting.
const hookKillGrace = 2 * time.Second

// hookTailLines is how many of a failed hook's last output lines its
// error quotes.
const hookTailLines = 5

// HookError is a hook that failed, timed out or could not start.
type HookError struct {
	Phase    string
	Command  []string
	TimedOut bool
	Err      error
	Tail     []string // its last lines of output
}

func (e *HookError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s hook %q ", e.Phase, strings.Join(e.Command, " "))
	if e.TimedOut {
		b.WriteString("timed out; its process group was killed")
	} else {
		fmt.Fprintf(&b, "failed: %v", e.Err)
	}
	if len(e.Tail) > 0 {
		fmt.Fprintf(&b, " (last output: %s)", strings.Join(e.Tail, " | "))
	}
	return b.String()
}

func (e *HookError) Unwrap() error { return e.Err }

// RunHook runs hook (nil: nothing to do) with env added to pmvm's
// environment, in its own process group, with stdin from /dev/null. Each
// line of its stdout and stderr goes to log (fields hook, stream). When the
// hook's timeout passes or ctx ends, the whole process group is killed
// (SIGKILL), so a hook cannot leave children behind in its group.
func RunHook(ctx context.Context, hook *configs.Hook, env HookEnv, log zerolog.Logger) error {
	if hook == nil || len(hook.Command) == 0 {
		return nil
	}
	timeout := hook.Timeout.Std()
	if timeout <= 0 {
		timeout = configs.DefaultHookTimeout
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(hctx, hook.Command[0], hook.Command[1:]...)
	cmd.Env = append(os.Environ(), env.Environ()...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The group's id is the hook's pid (Setpgid with Pgid 0).
		return unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
	}
	cmd.WaitDelay = hookKillGrace

	hlog := log.With().Str("hook", env.Phase).Logger()
	tail := &lineTail{max: hookTailLines}
	stdout := &lineLogger{log: hlog, stream: "stdout", tail: tail}
	stderr := &lineLogger{log: hlog, stream: "stderr", tail: tail}
	// Writers that are not *os.File make exec copy through pipes, and
	// WaitDelay bounds that copy if a descendant escaped the group with
	// the pipe open.
	cmd.Stdout, cmd.Stderr = stdout, stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return &HookError{Phase: env.Phase, Command: hook.Command, Err: err}
	}
	hlog.Info().Strs("command", hook.Command).Int("pid", cmd.Process.Pid).Dur("timeout", timeout).Msg("hook started")
	err := cmd.Wait()
	// Whatever happened, nothing of the hook's group may outlive it.
	unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
	stdout.flush()
	stderr.flush()

	took := time.Since(start)
	if err == nil {
		hlog.Info().Dur("took", took).Msg("hook succeeded")
		return nil
	}
	timedOut := errors.Is(hctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	herr := &HookError{Phase: env.Phase, Command: hook.Command, TimedOut: timedOut, Err: err, Tail: tail.lines()}
	if ctx.Err() != nil {
		herr.Err = fmt.Errorf("%w (cancelled: %v)", err, ctx.Err())
	}
	hlog.Error().Err(herr).Dur("took", took).Msg("hook failed")
	return herr
}

// lineLogger logs each line written to it (one per hook stream) and keeps
// the last ones in tail.
type lineLogger struct {
	log    zerolog.Logger
	stream string
	tail   *lineTail
	mu     sync.Mutex
	buf    []byte
}

// maxHookLine is where a line without a newline is cut.
const maxHookLine = 64 << 10

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) >= maxHookLine {
				l.emit(l.buf)
				l.buf = l.buf[:0]
			}
			return len(p), nil
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

func (l *lineLogger) emit(b []byte) {
	line := strings.TrimRight(string(b), "\r")
	l.tail.add(line)
	l.log.Info().Str("stream", l.stream).Msg(line)
}

// flush logs a last line that had no newline.
func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}

// lineTail keeps the last max lines written to it.
type lineTail struct {
	mu  sync.Mutex
	max int
	buf []string
}

func (t *lineTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, line)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
}

func (t *lineTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.buf...)
}
