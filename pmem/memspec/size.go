package memspec

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Binary size units. Sizes are always binary: "MB", "M" and friends are
// refused so nobody has to wonder whether 512MB means 10^6 or 2^20 bytes.
const (
	KiB uint64 = 1 << 10
	MiB uint64 = 1 << 20
	GiB uint64 = 1 << 30
	TiB uint64 = 1 << 40
)

// units is ordered from the largest, which FormatSize relies on.
var units = []struct {
	name string
	mult uint64
}{
	{"TiB", TiB},
	{"GiB", GiB},
	{"MiB", MiB},
	{"KiB", KiB},
}

// ParseSize parses a whole number of bytes with an optional binary unit:
// "536870912", "512MiB", "512 MiB", "2GiB", "1TiB", "64KiB". An explicit "B"
// suffix is accepted ("4096B"). Fractions, signs, decimal units (MB, GB) and
// overflow are refused.
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("size %q: empty; write e.g. \"512MiB\"", s)
	}
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if num == "" {
		return 0, fmt.Errorf("size %q: must start with a whole number of bytes or units, e.g. \"512MiB\"", s)
	}
	if strings.HasPrefix(unit, ".") {
		return 0, fmt.Errorf("size %q: fractions are not accepted; use a smaller unit (e.g. 1536MiB instead of 1.5GiB)", s)
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: number too large", s)
	}
	mult := uint64(1)
	switch unit {
	case "", "B":
	default:
		found := false
		for _, u := range units {
			if unit == u.name {
				mult, found = u.mult, true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("size %q: unknown unit %q; use KiB, MiB, GiB or TiB (binary units), or a plain number of bytes", s, unit)
		}
	}
	if n > math.MaxUint64/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n * mult, nil
}

// FormatSize writes n with the largest binary unit that divides it exactly
// ("512MiB", "3GiB"), or as a plain number of bytes. ParseSize(FormatSize(n))
// == n for every n, and truncate -s reads it too. It is the one size
// formatter: the config, pmem's messages and the guest layout's all use it.
func FormatSize(n uint64) string {
	if n != 0 {
		for _, u := range units {
			if n%u.mult == 0 {
				return strconv.FormatUint(n/u.mult, 10) + u.name
			}
		}
	}
	return strconv.FormatUint(n, 10)
}
