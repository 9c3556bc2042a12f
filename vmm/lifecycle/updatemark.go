package lifecycle

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pmvm/pmvm/configs"
	"github.com/pmvm/pmvm/state"
)

// UpdateMarkerName is the file in runtime_dir that says a host update is
// under way: pmvm run refuses to start a VM while it exists, since the
// kexec would kill a VM the update did not plan to save. pmvm host update
// writes it before it suspends anything and removes it when it rolls back;
// after the kexec runtime_dir (a tmpfs) starts empty, and pmvm host restore
// removes it (after --no-reboot).
const UpdateMarkerName = "host-update.in-progress"

// MarkUpdate writes the update marker in runtimeDir, durably; detail says
// what the update does (for pmvm run's refusal).
func MarkUpdate(runtimeDir, detail string) error {
	if err := os.MkdirAll(runtimeDir, 0o755); err != nil {
		return fmt.Errorf("runtime_dir: %w", err)
	}
	body := fmt.Sprintf("pid %d, started %s, %s\n", os.Getpid(), time.Now().UTC().Format(time.RFC3339), detail)
	if err := state.WriteFileDurable(filepath.Join(runtimeDir, UpdateMarkerName), []byte(body)); err != nil {
		return fmt.Errorf("host update marker: %w", err)
	}
	return nil
}

// UnmarkUpdate removes the update marker from runtimeDir, if any.
func UnmarkUpdate(runtimeDir string) error {
	err := os.Remove(filepath.Join(runtimeDir, UpdateMarkerName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the host update marker: %w", err)
	}
	return nil
}

// refuseDuringUpdate refuses to run a VM while a host update is under way
// in the runtime_dir of h (or PMVM_RUNTIME_DIR, or the default).
func refuseDuringUpdate(h HostConfig) error {
	dir := os.Getenv("PMVM_RUNTIME_DIR")
	if h.Host != nil && h.Host.RuntimeDir != "" {
		dir = h.Host.RuntimeDir
	}
	if dir == "" {
		dir = configs.DefaultHostRuntimeDir
	}
	p := filepath.Join(dir, UpdateMarkerName)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	what := strings.TrimSpace(string(b))
	if err != nil {
		what = err.Error()
	}
	return fmt.Errorf("a host update is under way (%s: %s): a VM started now would be killed unsaved by its kexec, so none is started; nothing was started and guest memory was not touched. "+
		"Start it once the update is over (after the kexec, or its rollback); if no pmvm host update runs any more and no VM waits in state_dir, remove %s", p, what, p)
}
