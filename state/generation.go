package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Generations spend a state file on the memory it was saved over, not on
// its name.
//
// Moving a resumed state file aside (MoveAsideResumed) stops only that
// path: a copy, a hard link or a symlink's target would still resume, over
// memory the guest has changed since. So every memory backing has a
// generation, a counter kept in a small file named by the backing's
// identity (GenerationKey in pmem: a device-dax namespace's uuid, a file's
// device and inode) in GenerationDir:
//
//   - a save records the backing's current generation in the state file
//     (creating the record at 0 if there is none);
//   - a resume is refused unless the state's generation is the backing's
//     current one ("already resumed"), checked first before anything is
//     mapped and again under the backing's lock, and then advances it,
//     durably, before the vCPUs run. Every earlier save, and every copy of
//     it, is spent from then on.
//
// GenerationDir must outlive what the memory outlives: a host kexec. /run
// is tmpfs and does not; the default is on disk beside the default
// state_dir. Guest memory itself is never written. A missing record (the
// directory was wiped) cannot tell, so the resume goes ahead, saying so,
// and records the next generation; a state file from before generations
// existed carries none and resumes as it did.

// DefaultGenerationDir is where generation records are kept: on disk, so
// that they survive a host kexec as the memory does.
const DefaultGenerationDir = "/var/lib/pmvm/generations"

// GenerationDirEnv names another directory for the records (tests, and
// hosts whose /var/lib is not on disk); the processes a pmvm starts inherit it.
const GenerationDirEnv = "PMVM_GENERATION_DIR"

// GenerationDir is the directory in use: $PMVM_GENERATION_DIR, else the
// default.
var GenerationDir = generationDirFromEnv()

func generationDirFromEnv() string {
	if d := os.Getenv(GenerationDirEnv); d != "" {
		return d
	}
	return DefaultGenerationDir
}

// GenerationSection is the state file section holding the generation of
// each memory block at save (a JSON list of Generation).
const GenerationSection = "memory-generations"

// Generation is one memory block's generation at save.
type Generation struct {
	Block      string `json:"block"`
	Key        string `json:"key"` // the backing's record, in GenerationDir
	Generation uint64 `json:"generation"`
}

// validKey: a record's name, which comes from a state file: a plain file
// name of [a-z0-9._:-], never a path.
func validKey(key string) bool {
	if key == "" || len(key) > 200 || strings.HasPrefix(key, ".") {
		return false
	}
	return strings.Trim(key, "abcdefghijklmnopqrstuvwxyz0123456789._:-") == ""
}

// GenerationPath is the record file of key.
func GenerationPath(key string) string { return filepath.Join(GenerationDir, key) }

// CurrentGeneration reads the generation recorded for key; known is false
// when there is no record.
func CurrentGeneration(key string) (gen uint64, known bool, err error) {
	if !validKey(key) {
		return 0, false, fmt.Errorf("generation record name %q is not valid", key)
	}
	path := GenerationPath(key)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read the memory's generation record %s: %w", path, err)
	}
	gen, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("the memory's generation record %s is corrupt (%q): it cannot tell which state file is current; if you know the guest's last save is the state file you resume, remove the record (rm %s) and resume again", path, b, path)
	}
	return gen, true, nil
}

// SetGeneration records gen for key, atomically and durably.
func SetGeneration(key string, gen uint64) error {
	if !validKey(key) {
		return fmt.Errorf("generation record name %q is not valid", key)
	}
	if err := os.MkdirAll(GenerationDir, 0o700); err != nil {
		return fmt.Errorf("record the memory's generation: %w", err)
	}
	if err := WriteFileDurable(GenerationPath(key), []byte(strconv.FormatUint(gen, 10)+"\n")); err != nil {
		return fmt.Errorf("record the memory's generation: %w", err)
	}
	return nil
}
