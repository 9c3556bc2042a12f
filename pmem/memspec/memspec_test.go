package memspec

import "testing"

func TestModeDefaultAndValidity(t *testing.T) {
	for _, tc := range []struct {
		m       Mode
		def     Mode
		valid   bool
		carried bool
	}{
		{"", ModeNone, true, false},
		{ModeNone, ModeNone, true, false},
		{ModeReboot, ModeReboot, true, true},
		{ModeRestart, ModeRestart, true, true},
		{"suspend", "suspend", false, false},
	} {
		if got := tc.m.OrDefault(); got != tc.def {
			t.Errorf("Mode(%q).OrDefault() = %q, want %q", tc.m, got, tc.def)
		}
		if got := tc.m.Valid(); got != tc.valid {
			t.Errorf("Mode(%q).Valid() = %v, want %v", tc.m, got, tc.valid)
		}
		if got := tc.m.CarriedByStateFile(); got != tc.carried {
			t.Errorf("Mode(%q).CarriedByStateFile() = %v, want %v", tc.m, got, tc.carried)
		}
	}
}

func TestIsPathBacking(t *testing.T) {
	for backing, want := range map[string]bool{
		"": false, BackingAnonymous: false, BackingMemfd: false,
		"/dev/dax0.0": true, "/dev/shm/vm": true, "relative/file": true,
	} {
		if got := IsPathBacking(backing); got != want {
			t.Errorf("IsPathBacking(%q) = %v, want %v", backing, got, want)
		}
	}
}
