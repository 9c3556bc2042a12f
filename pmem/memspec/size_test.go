package memspec

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseSizeAccepts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"0", 0},
		{"4096", 4096},
		{"4096B", 4096},
		{"64KiB", 64 * KiB},
		{"512MiB", 512 * MiB},
		{"512 MiB", 512 * MiB},
		{" 2GiB ", 2 * GiB},
		{"1TiB", TiB},
		{"16777215TiB", 16777215 * TiB},
		{"18446744073709551615", math.MaxUint64},
	} {
		got, err := ParseSize(tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
	}
}

// Each refusal names the input, so a typo in a config is easy to find.
func TestParseSizeRefuses(t *testing.T) {
	for _, tc := range []struct {
		in, why string
	}{
		{"", "empty"},
		{"MiB", "whole number"},
		{"-1MiB", "whole number"},
		{"+1MiB", "whole number"},
		{"1.5GiB", "fractions"},
		{"512MB", "unknown unit \"MB\""},   // decimal units are ambiguous
		{"512M", "unknown unit \"M\""},     // so are bare prefixes
		{"512mib", "unknown unit \"mib\""}, // units are case-sensitive
		{"1e9", "unknown unit"},
		{"16777216TiB", "too large"}, // 2^64 overflows
		{"18446744073709551616", "too large"},
		{"1 2MiB", "unknown unit"},
	} {
		_, err := ParseSize(tc.in)
		require.Error(t, err, tc.in)
		require.Contains(t, err.Error(), tc.why, tc.in)
		require.Contains(t, err.Error(), "size ", tc.in)
	}
}

// FormatSize picks the largest exact unit, and ParseSize reads back every
// value it writes.
func TestFormatSizeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1023, "1023"},
		{KiB, "1KiB"},
		{3 * MiB, "3MiB"},
		{1536 * MiB, "1536MiB"},
		{2 * GiB, "2GiB"},
		{TiB, "1TiB"},
		{3*MiB + 1, "3145729"},
		{math.MaxUint64, "18446744073709551615"},
	} {
		require.Equal(t, tc.want, FormatSize(tc.n))
		back, err := ParseSize(FormatSize(tc.n))
		require.NoError(t, err)
		require.Equal(t, tc.n, back)
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "512MiB", "1 GiB", "1.5GiB", "16777216TiB", "4096B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		back, err := ParseSize(FormatSize(n))
		if err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d, but FormatSize gives %q which parses to %d, %v", s, n, FormatSize(n), back, err)
		}
	})
}
