package pmem

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// The whole verdict table: reboot needs SurvivesKexec, restart needs
// SurvivesRestart or better, none accepts everything; an unknown class
// satisfies nothing but none.
func TestModeVerdictTable(t *testing.T) {
	classes := []Class{Volatile, SurvivesRestart, SurvivesKexec}
	want := map[memspec.Mode][]bool{
		memspec.ModeNone:    {true, true, true},
		"":                  {true, true, true},
		memspec.ModeRestart: {false, true, true},
		memspec.ModeReboot:  {false, false, true},
	}
	for mode, oks := range want {
		for i, c := range classes {
			require.Equal(t, oks[i], Allows(mode, c), "mode %q class %s", mode, c)
		}
	}
	require.False(t, Allows(memspec.ModeRestart, ""), "unknown class")
	require.Equal(t, SurvivesKexec, Needs(memspec.ModeReboot))
	require.Equal(t, SurvivesRestart, Needs(memspec.ModeRestart))
	require.Equal(t, Volatile, Needs(""))
}

// Each refusal says what the memory survives, what the mode needs, and
// what to use instead, with hints fitted to the kind of backing.
func TestModeVerdictMessages(t *testing.T) {
	for _, tc := range []struct {
		mode memspec.Mode
		b    Backing
		want []string
	}{
		{memspec.ModeReboot, Backing{Identity: Identity{Kind: KindAnonymous}, Class: Volatile}, []string{
			"is volatile: mode reboot needs memory that survives a host kexec; use a device-dax namespace (/dev/daxX.Y",
			"or a file on a DAX filesystem",
		}},
		{memspec.ModeReboot, Backing{Identity: Identity{Kind: KindTmpfs}, Class: SurvivesRestart}, []string{
			"survives a VMM restart but not a host kexec: mode reboot needs",
			"preserved_across_kexec = true",
		}},
		{memspec.ModeReboot, Backing{Identity: Identity{Kind: KindHugetlbfs}, Class: SurvivesRestart}, []string{"hugetlbfs pages are freed by a kexec"}},
		{memspec.ModeReboot, Backing{Identity: Identity{Kind: KindFile}, Class: SurvivesRestart}, []string{"page cache"}},
		{memspec.ModeReboot, Backing{Identity: Identity{Kind: KindFsDax}, Class: SurvivesRestart, daxWhyNot: "its device vda is not persistent memory"}, []string{
			"on a DAX filesystem, but its device vda is not persistent memory",
		}},
		{memspec.ModeRestart, Backing{Identity: Identity{Kind: KindAnonymous}, Class: Volatile}, []string{
			"is volatile: mode restart needs memory that outlives the VMM process (anonymous memory dies with the process, shared or not); use backing = \"memfd\"",
		}},
	} {
		got := modeVerdict(tc.mode, &tc.b)
		for _, w := range tc.want {
			require.Contains(t, got, w, "%s %s", tc.mode, tc.b.Kind)
		}
	}
	require.Empty(t, modeVerdict(memspec.ModeReboot, &Backing{Class: SurvivesKexec}))
	require.Empty(t, modeVerdict(memspec.ModeNone, &Backing{Class: Volatile}))
}

func TestClassJSON(t *testing.T) {
	b, err := json.Marshal(struct{ C Class }{SurvivesKexec})
	require.NoError(t, err)
	require.JSONEq(t, `{"C":"survives-kexec"}`, string(b))
}
