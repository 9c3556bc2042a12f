package acpi_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pmvm/pmvm/vmm"
	"github.com/pmvm/pmvm/vmm/acpi"
	"github.com/pmvm/pmvm/vmm/devices/acpipm"
	"github.com/pmvm/pmvm/vmm/x86"
)

// dslSleepPackage matches iasl's disassembly of a \_Sx package:
//
//	Name (_S3, Package (0x04)  // _S3_: S3 System State
//	{
//	    0x03,
//	    0x03,
//	    Zero,
//	    Zero
//	})
func dslSleepPackage(t *testing.T, dsl, name string) []uint64 {
	t.Helper()
	re := regexp.MustCompile(`Name \(` + name + `, Package \(0x04\)[^\n]*\n\s*\{([^}]*)\}\)`)
	m := re.FindStringSubmatch(dsl)
	require.NotNil(t, m, "iasl's DSDT disassembly has no 4-element %s package:\n%s", name, dsl)
	var vals []uint64
	for _, f := range strings.Split(m[1], ",") {
		f = strings.TrimSpace(f)
		switch f {
		case "Zero":
			vals = append(vals, 0)
		case "One":
			vals = append(vals, 1)
		default:
			v, err := strconv.ParseUint(f, 0, 64)
			require.NoError(t, err, "%s element %q", name, f)
			vals = append(vals, v)
		}
	}
	return vals
}

// slpTypOnDevice writes SLP_TYP=typ with SLP_EN to PM1a_CNT of pmvm's acpipm
// block, as ACPICA's acpi_hw_legacy_sleep does, and returns the SLP_TYP the
// block hands to its onSleep callback (Machine.onSleep in pmvm).
func slpTypOnDevice(t *testing.T, typ uint8) uint8 {
	t.Helper()
	var got []uint8
	pm := acpipm.New(acpipm.DefaultConfig(), nil, func(s uint8) { got = append(got, s) })
	defer pm.Close()
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], uint16(typ)<<acpipm.CntSLPTYPShift|acpipm.CntSLPEN)
	pm.Write(x86.PM1aControlPort-x86.PMBlockPort, b[:])
	require.Len(t, got, 1, "one SLP_EN write, one onSleep call")
	return got[0]
}

// TestPMVMTablesWithIASL proves the ACPI tables pmvm really boots with —
// vmm.ACPIConfig(n) built at x86.ACPITablesAddr, as Machine.Boot does, for
// 1, 2 and 8 vCPUs — pass every check of TestIASL (clean iasl disassembly,
// byte-exact recompilation, FADT and MADT fields, RSDP, DSDT against
// hand-written ASL), and that they agree with the acpipm device the VMM
// puts behind them:
//
//   - iasl's disassembly shows \_S3 = {S3, S3, 0, 0} and \_S5 = {S5, S5, 0,
//     0} with S3, S5 = acpipm.SleepTypeS3, acpipm.SleepTypeS5, the values
//     Machine.onSleep turns into "suspend" and "power off";
//   - ACPICA (acpiexec) loads FADT, DSDT and MADT, and its S3 sleep sequence
//     computes exactly acpipm.SleepTypeS3 for SLP_TYPa/b;
//   - that value written with SLP_EN to the acpipm block at the FADT's
//     PM1a_CNT port reaches onSleep as acpipm.SleepTypeS3, and the \_S5
//     value as acpipm.SleepTypeS5;
//   - the FADT's PM1a event, PM1a control and PM timer ports are where the
//     acpipm block decodes STS, CNT and TMR.
//
// So a change of SLP_TYP or of the PM ports on either side fails here.
func TestPMVMTablesWithIASL(t *testing.T) {
	for _, vcpus := range []int{1, 2, 8} {
		t.Run(fmt.Sprintf("vcpus-%d", vcpus), func(t *testing.T) {
			c := vmm.ACPIConfig(vcpus)
			require.Equal(t, vcpus, c.CPUs)
			_, dir := acpi.CheckWithIASL(t, c, x86.ACPITablesAddr)

			dsl, err := os.ReadFile(filepath.Join(dir, "DSDT.dsl"))
			require.NoError(t, err)
			s3 := uint64(acpipm.SleepTypeS3)
			s5 := uint64(acpipm.SleepTypeS5)
			assert.Equal(t, []uint64{s3, s3, 0, 0}, dslSleepPackage(t, string(dsl), "_S3"),
				"\\_S3 must carry the SLP_TYP the acpipm device and Machine.onSleep treat as S3")
			assert.Equal(t, []uint64{s5, s5, 0, 0}, dslSleepPackage(t, string(dsl), "_S5"),
				"\\_S5 must carry the SLP_TYP the acpipm device and Machine.onSleep treat as S5")
			assert.Equal(t, []uint64{0, 0, 0, 0}, dslSleepPackage(t, string(dsl), "_S0"))

			// ACPICA's own S3 sequence: the SLP_TYP it would write.
			out, err := acpi.RunACPICA(t, dir, "acpiexec", "-b", `evaluate \_S3; evaluate \_S5; sleep 3`,
				"FACP.dat", "DSDT.dat", "APIC.dat")
			require.NoError(t, err, "acpiexec:\n%s", out)
			m := regexp.MustCompile(`Register values for sleep state S3: Sleep-A: ([0-9A-F]{2}), Sleep-B: ([0-9A-F]{2})`).FindStringSubmatch(out)
			require.NotNil(t, m, "acpiexec ran no S3 sequence:\n%s", out)
			a, err := strconv.ParseUint(m[1], 16, 8)
			require.NoError(t, err)
			b, err := strconv.ParseUint(m[2], 16, 8)
			require.NoError(t, err)
			assert.Equal(t, s3, a, "ACPICA's SLP_TYPa for S3")
			assert.Equal(t, s3, b, "ACPICA's SLP_TYPb for S3")
			assert.Contains(t, out, "**** Wake: Return from sleep (S3) ****")

			// The device hands those values on unchanged.
			assert.Equal(t, acpipm.SleepTypeS3, slpTypOnDevice(t, uint8(a)), "S3 from the tables reaches onSleep as S3")
			pkg5 := dslSleepPackage(t, string(dsl), "_S5")
			assert.Equal(t, acpipm.SleepTypeS5, slpTypOnDevice(t, uint8(pkg5[0])), "S5 from the tables reaches onSleep as S5")

			// The FADT's PM ports (checked against c by CheckWithIASL) are
			// the acpipm block's registers.
			assert.Equal(t, x86.PMBlockPort+acpipm.OffsetSTS, int(c.PM1aEventPort), "PM1a_EVT_BLK = the block's STS")
			assert.Equal(t, x86.PMBlockPort+acpipm.OffsetCNT, int(c.PM1aControlPort), "PM1a_CNT_BLK = the block's CNT")
			assert.Equal(t, x86.PMBlockPort+acpipm.OffsetTMR, int(c.PMTimerPort), "PM_TMR_BLK = the block's TMR")
			assert.True(t, acpipm.DefaultConfig().TimerExt32, "the FADT declares a 32-bit PM timer (checked by CheckWithIASL)")
		})
	}
}
