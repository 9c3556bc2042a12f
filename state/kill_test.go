package state

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// killWriterEnv names the target file when the test binary runs as the
// writer child of TestWriteFileSurvivesKill9.
const killWriterEnv = "PMVM_STATE_TEST_KILL_WRITER"

// killPayloadSize makes each write large enough that a random kill often
// lands while the temporary file is being written or synced.
const killPayloadSize = 1 << 20

func TestMain(m *testing.M) {
	if target := os.Getenv(killWriterEnv); target != "" {
		killWriter(target)
		return
	}
	os.Exit(m.Run())
}

// killVersion is one of the two distinguishable files the writer alternates.
func killVersion(which byte) *File {
	f := &File{Header: Header{VMName: "version-" + string(which), Mode: memspec.ModeReboot, Created: time.Unix(1, 0).UTC()}}
	if err := f.Add("memory/ram0", 1, bytes.Repeat([]byte{which}, killPayloadSize)); err != nil {
		panic(err)
	}
	return f
}

// killWriter writes the two versions over target until it is killed. It
// says "ready" once it has completed a write, so the parent kills it inside
// the loop and not during process start.
func killWriter(target string) {
	files := []*File{killVersion('a'), killVersion('b')}
	for i := 0; ; i++ {
		if err := WriteFile(target, files[i%2]); err != nil {
			fmt.Fprintln(os.Stderr, "writer:", err)
			os.Exit(3)
		}
		if i == 0 {
			fmt.Println("ready")
		}
	}
}

// TestWriteFileSurvivesKill9 proves WriteFile's atomicity against process
// death: a child process overwrites the state file in a loop with two
// 1 MiB versions and is SIGKILLed at a random moment, 20 times (more if no
// kill happened to land mid-write); after every kill the file decodes
// cleanly and is exactly one of the two versions. Kills that left a
// temporary file behind prove the test did interrupt writes in flight.
// (Power loss also needs the fsyncs, which a kill cannot exercise.)
func TestWriteFileSurvivesKill9(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	target := filepath.Join(dir, "vm.pmvmstate")
	require.NoError(t, WriteFile(target, killVersion('b')))

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	const rounds, maxRounds = 20, 100
	midWrite := 0
	seen := map[string]int{}
	for round := 0; round < maxRounds && (round < rounds || midWrite == 0); round++ {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), killWriterEnv+"="+target)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		line, err := bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err, "writer child did not start")
		require.Equal(t, "ready\n", line)

		time.Sleep(time.Duration(rng.Int64N(int64(20 * time.Millisecond))))
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		werr := cmd.Wait()
		require.Error(t, werr)
		require.Contains(t, werr.Error(), "killed", "the child must die by SIGKILL, not exit")

		f, err := ReadFile(target)
		require.NoError(t, err, "round %d: state file unreadable after kill -9", round)
		s, ok := f.Section("memory/ram0")
		require.True(t, ok)
		which := f.Header.VMName
		require.Contains(t, []string{"version-a", "version-b"}, which)
		require.Equal(t, bytes.Repeat([]byte{which[len(which)-1]}, killPayloadSize), s.Payload,
			"round %d: payload does not match header %s", round, which)
		seen[which]++

		for _, name := range dirEntries(t, dir) {
			if strings.HasPrefix(name, ".vm.pmvmstate.tmp-") {
				midWrite++
				require.NoError(t, os.Remove(filepath.Join(dir, name)))
			}
		}
	}
	t.Logf("versions after kills: %v; kills that landed mid-write: %d", seen, midWrite)
	assert.Positive(t, midWrite, "no kill interrupted a write: the test proved nothing")
}
