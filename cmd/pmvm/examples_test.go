package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestCheckRefusesTheAnonRebootExample proves the shipped example of a
// config pmvm must refuse is refused by pmvm check: exit 1, the block named
// with its class, and what to do instead.
func TestCheckRefusesTheAnonRebootExample(t *testing.T) {
	var out, errb bytes.Buffer
	code := cmdCheck([]string{filepath.Join("..", "..", "configs", "examples", "refused-anon-reboot.toml")}, &out, &errb)
	assert.Equal(t, exitFailure, code, errb.String())
	assert.Regexp(t, `(?m)^ram0 +anonymous .*volatile +REFUSED: .*device-dax`, out.String())
	assert.Contains(t, out.String(), "pmvm run would not start this VM")
}
