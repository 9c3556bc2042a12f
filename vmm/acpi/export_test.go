package acpi

import "testing"

// Hooks for the external test package acpi_test. Its tests import
// github.com/pmvm/pmvm/vmm, which imports this package, so they cannot live
// in package acpi; these give them the iasl checks of TestIASL.

// CheckWithIASL runs every check of TestIASL on the tables of c built at
// base and returns the image and the directory holding each <sig>.dsl.
func CheckWithIASL(t *testing.T, c Config, base uint64) (*Image, string) {
	t.Helper()
	return checkWithIASL(t, requireTool(t, "iasl"), c, base)
}

// RunACPICA runs the ACPICA tool (iasl, acpiexec) with args in dir and
// returns its combined output; a missing tool fails the test.
func RunACPICA(t *testing.T, dir, tool string, args ...string) (string, error) {
	t.Helper()
	return run(t, dir, requireTool(t, tool), args...)
}
