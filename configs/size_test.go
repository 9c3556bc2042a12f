package configs

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/pmem/memspec"
)

// A Size writes itself as text with memspec.FormatSize and reads it back.
func TestSizeTextRoundTrip(t *testing.T) {
	for _, n := range []uint64{0, 1, 1023, memspec.KiB, 1536 * memspec.MiB, memspec.TiB, 3*memspec.MiB + 1, math.MaxUint64} {
		b, err := Size(n).MarshalText()
		require.NoError(t, err)
		require.Equal(t, memspec.FormatSize(n), string(b))
		var s Size
		require.NoError(t, s.UnmarshalText(b))
		require.Equal(t, Size(n), s)
	}
	var s Size
	require.Error(t, s.UnmarshalText([]byte("1.5GiB")))
}

// In TOML, size is a string with a unit or a plain integer of bytes.
func TestSizeDecodesFromStringAndInteger(t *testing.T) {
	doc := `
[[memory]]
size = "512MiB"
[[memory]]
size = 2097152
[[memory]]
size = "1 GiB"
`
	v, err := Decode("sizes.toml", strings.NewReader(doc))
	require.NoError(t, err)
	require.Len(t, v.Memory, 3)
	require.Equal(t, Size(512*memspec.MiB), v.Memory[0].Size)
	require.Equal(t, Size(2*memspec.MiB), v.Memory[1].Size)
	require.Equal(t, Size(memspec.GiB), v.Memory[2].Size)
	require.Equal(t, 512*memspec.MiB+2*memspec.MiB+memspec.GiB, v.TotalMemory())
}
