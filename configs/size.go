package configs

import "github.com/pmvm/pmvm/pmem/memspec"

// Size is a number of bytes. In TOML it is either an integer (bytes) or a
// string such as "512MiB" (see memspec.ParseSize).
type Size uint64

// Bytes returns the size as a plain number of bytes.
func (s Size) Bytes() uint64 { return uint64(s) }

// String formats the size as memspec.FormatSize does.
func (s Size) String() string { return memspec.FormatSize(uint64(s)) }

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (TOML strings). TOML
// integers are stored directly by the decoder since Size is a uint64.
func (s *Size) UnmarshalText(b []byte) error {
	n, err := memspec.ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}
