package acpi

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var le = binary.LittleEndian

// testConfigs are the machines every table test runs on: the default, a
// minimal one exercising every "absent" branch, and the largest.
func testConfigs() map[string]Config {
	minimal := DefaultConfig(1)
	minimal.IOAPICID = 1
	minimal.PMTimerPort = 0
	minimal.ResetPort = 0
	minimal.ResetValue = 0
	minimal.EnableS3 = false
	minimal.SleepTypeS5 = 0
	minimal.PowerButton = true

	odd := DefaultConfig(3)
	odd.IOAPICID = 200
	odd.SCIIRQ = 10
	odd.PM1aEventPort = 0xB000
	odd.PM1aControlPort = 0xB004
	odd.PMTimerPort = 0xB008
	odd.SleepTypeS3 = 1
	odd.SleepTypeS5 = 0
	odd.ResetPort = 0x64
	odd.ResetValue = 0xFE

	return map[string]Config{
		"default-2":   DefaultConfig(2),
		"minimal-1":   minimal,
		"odd-3":       odd,
		"largest-254": DefaultConfig(254),
	}
}

func TestEveryTableHeader(t *testing.T) {
	for name, c := range testConfigs() {
		im, err := Build(c, 0xE0000)
		require.NoError(t, err, name)
		require.ElementsMatch(t, []string{"RSDP", "XSDT", "FACP", "FACS", "DSDT", "APIC"}, im.Signatures(), name)
		for _, sig := range []string{"XSDT", "FACP", "DSDT", "APIC"} {
			tb := im.Tables[sig]
			require.GreaterOrEqual(t, len(tb), HeaderSize, "%s %s", name, sig)
			assert.Equal(t, sig, string(tb[0:4]), "%s: signature", name)
			assert.Equal(t, uint32(len(tb)), le.Uint32(tb[HeaderLengthOffset:]), "%s %s: length field", name, sig)
			assert.Zero(t, Sum(tb), "%s %s: bytes must sum to 0", name, sig)
			assert.Equal(t, "PMVM  ", string(tb[HeaderOEMIDOffset:HeaderOEMIDOffset+6]), "%s %s", name, sig)
			assert.Equal(t, "PMVM"+sig, string(tb[HeaderOEMTableIDOffset:HeaderOEMTableIDOffset+8]), "%s %s", name, sig)
			assert.Equal(t, uint32(OEMRevision), le.Uint32(tb[HeaderOEMRevisionOffset:]))
			assert.Equal(t, "PMVM", string(tb[HeaderCreatorIDOffset:HeaderCreatorIDOffset+4]))
			assert.Equal(t, uint32(CreatorRevision), le.Uint32(tb[HeaderCreatorRevisionOffset:]))
		}
		assert.Equal(t, byte(XSDTRevision), im.Tables["XSDT"][HeaderRevisionOffset])
		assert.Equal(t, byte(FADTRevision), im.Tables["FACP"][HeaderRevisionOffset])
		assert.Equal(t, byte(DSDTRevision), im.Tables["DSDT"][HeaderRevisionOffset])
		assert.Equal(t, byte(MADTRevision), im.Tables["APIC"][HeaderRevisionOffset])
		assert.Len(t, im.Tables["FACP"], FADTSize)
		assert.Len(t, im.Tables["FACS"], FACSSize)
		assert.Len(t, im.Tables["RSDP"], RSDPSize)
	}
}

func TestRSDP(t *testing.T) {
	im := buildDefault(t, 2)
	r := im.Tables["RSDP"]
	assert.Equal(t, im.Base, im.RSDP)
	assert.Zero(t, im.RSDP%16, "Linux scans for the RSDP on 16-byte boundaries")
	assert.Equal(t, "RSD PTR ", string(r[:8]))
	assert.Zero(t, Sum(r[:RSDPv1Size]), "checksum over the first 20 bytes")
	assert.Zero(t, Sum(r[:RSDPSize]), "extended checksum over all 36 bytes")
	assert.Equal(t, "PMVM  ", string(r[RSDPOEMIDOffset:RSDPOEMIDOffset+6]))
	assert.Equal(t, byte(2), r[RSDPRevisionOffset])
	assert.Zero(t, le.Uint32(r[RSDPRsdtAddressOffset:]), "no RSDT")
	assert.Equal(t, uint32(36), le.Uint32(r[RSDPLengthOffset:]))
	assert.Equal(t, im.Addrs["XSDT"], le.Uint64(r[RSDPXsdtAddressOffset:]))
	assert.Equal(t, []byte{0, 0, 0}, r[33:36], "reserved")

	// Both checksums really are checked: break a byte covered only by the
	// extended checksum and only that sum goes wrong.
	r2 := append([]byte{}, r...)
	r2[RSDPXsdtAddressOffset]++
	assert.Zero(t, Sum(r2[:RSDPv1Size]))
	assert.NotZero(t, Sum(r2))
}

func TestXSDTListsFADTAndMADT(t *testing.T) {
	im := buildDefault(t, 2)
	x := im.Tables["XSDT"]
	require.Len(t, x, HeaderSize+16)
	assert.Equal(t, im.Addrs["FACP"], le.Uint64(x[36:]))
	assert.Equal(t, im.Addrs["APIC"], le.Uint64(x[44:]))
}

// TestFADTFieldOffsets checks the offset constants against ACPI 6.5 table
// 5.9, and that the fields tile the table with no gap or overlap.
func TestFADTFieldOffsets(t *testing.T) {
	fields := []struct {
		name   string
		offset int
		spec   int // offset in ACPI 6.5 section 5.2.9, "FADT Format"
		length int
	}{
		{"FIRMWARE_CTRL", FADTFirmwareCtrlOffset, 36, 4},
		{"DSDT", FADTDSDTOffset, 40, 4},
		{"Reserved (INT_MODEL)", 44, 44, 1},
		{"Preferred_PM_Profile", FADTPreferredPMProfileOffset, 45, 1},
		{"SCI_INT", FADTSCIIntOffset, 46, 2},
		{"SMI_CMD", FADTSMICmdOffset, 48, 4},
		{"ACPI_ENABLE", FADTACPIEnableOffset, 52, 1},
		{"ACPI_DISABLE", FADTACPIDisableOffset, 53, 1},
		{"S4BIOS_REQ", FADTS4BIOSReqOffset, 54, 1},
		{"PSTATE_CNT", FADTPStateCntOffset, 55, 1},
		{"PM1a_EVT_BLK", FADTPM1aEvtBlkOffset, 56, 4},
		{"PM1b_EVT_BLK", FADTPM1bEvtBlkOffset, 60, 4},
		{"PM1a_CNT_BLK", FADTPM1aCntBlkOffset, 64, 4},
		{"PM1b_CNT_BLK", FADTPM1bCntBlkOffset, 68, 4},
		{"PM2_CNT_BLK", FADTPM2CntBlkOffset, 72, 4},
		{"PM_TMR_BLK", FADTPMTmrBlkOffset, 76, 4},
		{"GPE0_BLK", FADTGPE0BlkOffset, 80, 4},
		{"GPE1_BLK", FADTGPE1BlkOffset, 84, 4},
		{"PM1_EVT_LEN", FADTPM1EvtLenOffset, 88, 1},
		{"PM1_CNT_LEN", FADTPM1CntLenOffset, 89, 1},
		{"PM2_CNT_LEN", FADTPM2CntLenOffset, 90, 1},
		{"PM_TMR_LEN", FADTPMTmrLenOffset, 91, 1},
		{"GPE0_BLK_LEN", FADTGPE0BlkLenOffset, 92, 1},
		{"GPE1_BLK_LEN", FADTGPE1BlkLenOffset, 93, 1},
		{"GPE1_BASE", FADTGPE1BaseOffset, 94, 1},
		{"CST_CNT", FADTCstCntOffset, 95, 1},
		{"P_LVL2_LAT", FADTPLvl2LatOffset, 96, 2},
		{"P_LVL3_LAT", FADTPLvl3LatOffset, 98, 2},
		{"FLUSH_SIZE", FADTFlushSizeOffset, 100, 2},
		{"FLUSH_STRIDE", FADTFlushStrideOffset, 102, 2},
		{"DUTY_OFFSET", FADTDutyOffsetOffset, 104, 1},
		{"DUTY_WIDTH", FADTDutyWidthOffset, 105, 1},
		{"DAY_ALRM", FADTDayAlrmOffset, 106, 1},
		{"MON_ALRM", FADTMonAlrmOffset, 107, 1},
		{"CENTURY", FADTCenturyOffset, 108, 1},
		{"IAPC_BOOT_ARCH", FADTIAPCBootArchOffset, 109, 2},
		{"Reserved", 111, 111, 1},
		{"Flags", FADTFlagsOffset, 112, 4},
		{"RESET_REG", FADTResetRegOffset, 116, 12},
		{"RESET_VALUE", FADTResetValueOffset, 128, 1},
		{"ARM_BOOT_ARCH", FADTARMBootArchOffset, 129, 2},
		{"FADT Minor Version", FADTMinorVersionOffset, 131, 1},
		{"X_FIRMWARE_CTRL", FADTXFirmwareCtrlOffset, 132, 8},
		{"X_DSDT", FADTXDSDTOffset, 140, 8},
		{"X_PM1a_EVT_BLK", FADTXPM1aEvtBlkOffset, 148, 12},
		{"X_PM1b_EVT_BLK", FADTXPM1bEvtBlkOffset, 160, 12},
		{"X_PM1a_CNT_BLK", FADTXPM1aCntBlkOffset, 172, 12},
		{"X_PM1b_CNT_BLK", FADTXPM1bCntBlkOffset, 184, 12},
		{"X_PM2_CNT_BLK", FADTXPM2CntBlkOffset, 196, 12},
		{"X_PM_TMR_BLK", FADTXPMTmrBlkOffset, 208, 12},
		{"X_GPE0_BLK", FADTXGPE0BlkOffset, 220, 12},
		{"X_GPE1_BLK", FADTXGPE1BlkOffset, 232, 12},
		{"SLEEP_CONTROL_REG", FADTSleepControlRegOffset, 244, 12},
		{"SLEEP_STATUS_REG", FADTSleepStatusRegOffset, 256, 12},
		{"Hypervisor Vendor Identity", FADTHypervisorVendorOffset, 268, 8},
	}
	next := HeaderSize
	for _, f := range fields {
		assert.Equal(t, f.spec, f.offset, "%s offset", f.name)
		assert.Equal(t, next, f.offset, "%s does not follow the previous field", f.name)
		next = f.offset + f.length
	}
	assert.Equal(t, FADTSize, next, "FADT rev 6 length")
}

func gasAt(b []byte, off int) GAS {
	return GAS{SpaceID: b[off], BitWidth: b[off+1], BitOffset: b[off+2], AccessSize: b[off+3],
		Address: le.Uint64(b[off+4:])}
}

func TestFADTContents(t *testing.T) {
	im := buildDefault(t, 2)
	f := im.Tables["FACP"]

	// FACS and DSDT pointers, both widths, equal.
	assert.Equal(t, uint32(im.FACS), le.Uint32(f[FADTFirmwareCtrlOffset:]))
	assert.Equal(t, im.FACS, le.Uint64(f[FADTXFirmwareCtrlOffset:]))
	assert.Equal(t, uint32(im.Addrs["DSDT"]), le.Uint32(f[40:]))
	assert.Equal(t, im.Addrs["DSDT"], le.Uint64(f[140:]))

	assert.Equal(t, uint16(9), le.Uint16(f[46:]), "SCI_INT")
	assert.Zero(t, le.Uint32(f[48:]), "SMI_CMD: ACPI always enabled")
	assert.Equal(t, []byte{0, 0, 0, 0}, f[52:56], "ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT")

	assert.Equal(t, uint32(0x600), le.Uint32(f[56:]), "PM1a_EVT_BLK")
	assert.Zero(t, le.Uint32(f[60:]), "PM1b_EVT_BLK")
	assert.Equal(t, uint32(0x604), le.Uint32(f[64:]), "PM1a_CNT_BLK")
	assert.Zero(t, le.Uint32(f[68:]), "PM1b_CNT_BLK")
	assert.Zero(t, le.Uint32(f[72:]), "PM2_CNT_BLK")
	assert.Equal(t, uint32(0x608), le.Uint32(f[76:]), "PM_TMR_BLK")
	assert.Zero(t, le.Uint64(f[80:]), "GPE0_BLK, GPE1_BLK")
	assert.Equal(t, []byte{4, 2, 0, 4, 0, 0, 0, 0}, f[88:96], "PM1_EVT_LEN .. CST_CNT")
	assert.Equal(t, byte(0x32), f[108], "CENTURY")
	assert.Equal(t, uint16(BootArchLegacyDevices|BootArch8042), le.Uint16(f[109:]), "IAPC_BOOT_ARCH")

	flags := le.Uint32(f[112:])
	assert.Equal(t, uint32(FADTFlagWBINVD|FADTFlagProcC1|FADTFlagPwrButton|FADTFlagSlpButton|
		FADTFlagFixRTC|FADTFlagTmrValExt|FADTFlagResetRegSup), flags, "flags 0x%X", flags)
	assert.Zero(t, flags&FADTFlagHWReducedACPI, "must not be hardware-reduced")

	assert.Equal(t, GAS{SpaceSystemIO, 8, 0, AccessByte, 0xCF9}, gasAt(f, 116), "RESET_REG")
	assert.Equal(t, byte(0x06), f[128], "RESET_VALUE")
	assert.Equal(t, byte(5), f[131], "FADT minor version")

	// X_ GAS fields agree with the 32-bit fields: same port, width 8*len.
	assert.Equal(t, GAS{SpaceSystemIO, 32, 0, AccessWord, 0x600}, gasAt(f, 148), "X_PM1a_EVT_BLK")
	assert.Equal(t, GAS{}, gasAt(f, 160), "X_PM1b_EVT_BLK")
	assert.Equal(t, GAS{SpaceSystemIO, 16, 0, AccessWord, 0x604}, gasAt(f, 172), "X_PM1a_CNT_BLK")
	assert.Equal(t, GAS{}, gasAt(f, 184), "X_PM1b_CNT_BLK")
	assert.Equal(t, GAS{}, gasAt(f, 196), "X_PM2_CNT_BLK")
	assert.Equal(t, GAS{SpaceSystemIO, 32, 0, AccessDWord, 0x608}, gasAt(f, 208), "X_PM_TMR_BLK")
	assert.Equal(t, make([]byte, FADTSize-220), f[220:], "X_GPE0/1, sleep registers, hypervisor id")
	for _, pair := range [][3]int{{56, 88, 148}, {64, 89, 172}, {76, 91, 208}} {
		g := gasAt(f, pair[2])
		assert.Equal(t, uint64(le.Uint32(f[pair[0]:])), g.Address, "offset %d", pair[2])
		assert.Equal(t, 8*f[pair[1]], g.BitWidth, "offset %d", pair[2])
	}
}

func TestFADTOptionalParts(t *testing.T) {
	c := testConfigs()["minimal-1"]
	im, err := Build(c, 0xE0000)
	require.NoError(t, err)
	f := im.Tables["FACP"]
	flags := le.Uint32(f[FADTFlagsOffset:])
	assert.Zero(t, flags&FADTFlagPwrButton, "PowerButton: fixed power button present")
	assert.NotZero(t, flags&FADTFlagSlpButton)
	assert.Zero(t, flags&FADTFlagTmrValExt, "no PM timer, no TMR_VAL_EXT")
	assert.Zero(t, flags&FADTFlagResetRegSup, "no reset register")
	assert.Zero(t, le.Uint32(f[FADTPMTmrBlkOffset:]))
	assert.Zero(t, f[FADTPMTmrLenOffset])
	assert.Equal(t, GAS{}, gasAt(f, FADTXPMTmrBlkOffset))
	assert.Equal(t, GAS{}, gasAt(f, FADTResetRegOffset))
	assert.Zero(t, f[FADTResetValueOffset])
}

func TestFACS(t *testing.T) {
	im := buildDefault(t, 2)
	f := im.Tables["FACS"]
	assert.Zero(t, im.FACS%FACSAlignment, "FACS 64-byte aligned")
	assert.Equal(t, im.Addrs["FACS"], im.FACS)
	assert.Equal(t, "FACS", string(f[:4]))
	assert.Equal(t, uint32(64), le.Uint32(f[FACSLengthOffset:]))
	assert.NotZero(t, le.Uint32(f[FACSHardwareSignatureOffset:]))
	assert.Zero(t, le.Uint32(f[FACSFirmwareWakingVectorOffset:]))
	assert.Zero(t, le.Uint32(f[FACSGlobalLockOffset:]))
	assert.Zero(t, le.Uint32(f[FACSFlagsOffset:]))
	assert.Zero(t, le.Uint64(f[FACSXFirmwareWakingVectorOffset:]))
	assert.Equal(t, byte(2), f[FACSVersionOffset])
	assert.Zero(t, le.Uint32(f[FACSOSPMFlagsOffset:]))
	assert.Equal(t, im.FACS+12, im.FirmwareWakingVectorAddr())

	// Offsets per ACPI 6.5 section 5.2.10 (and ACPICA's struct acpi_table_facs).
	assert.Equal(t, []int{0, 4, 8, 12, 16, 20, 24, 32, 36}, []int{FACSSignatureOffset, FACSLengthOffset,
		FACSHardwareSignatureOffset, FACSFirmwareWakingVectorOffset, FACSGlobalLockOffset, FACSFlagsOffset,
		FACSXFirmwareWakingVectorOffset, FACSVersionOffset, FACSOSPMFlagsOffset})

	// The hardware signature depends on the hardware described, not on where
	// the tables sit: a resumed VM with the same config sees the same value.
	im2, err := Build(DefaultConfig(2), 0x80000)
	require.NoError(t, err)
	assert.Equal(t, f[8:12], im2.Tables["FACS"][8:12])
	im4 := buildDefault(t, 4)
	assert.NotEqual(t, f[8:12], im4.Tables["FACS"][8:12])
}

func TestMADT(t *testing.T) {
	for name, c := range testConfigs() {
		im, err := Build(c, 0xE0000)
		require.NoError(t, err)
		m := im.Tables["APIC"]
		assert.Equal(t, c.LocalAPICAddr, le.Uint32(m[36:]), name)
		assert.Equal(t, uint32(MADTFlagPCATCompat), le.Uint32(m[40:]), name)

		var lapics, ioapics, overrides, nmis int
		for e := m[MADTEntriesOffset:]; len(e) > 0; {
			require.GreaterOrEqual(t, len(e), 2, name)
			typ, n := e[0], int(e[1])
			require.GreaterOrEqual(t, len(e), n, "%s: entry type %d overruns the table", name, typ)
			switch typ {
			case MADTTypeLocalAPIC:
				require.Equal(t, 8, n)
				assert.Equal(t, byte(lapics), e[2], "%s: processor UID", name)
				assert.Equal(t, byte(lapics), e[3], "%s: APIC id", name)
				assert.Equal(t, uint32(1), le.Uint32(e[4:]), "%s: enabled", name)
				lapics++
			case MADTTypeIOAPIC:
				require.Equal(t, 12, n)
				assert.Equal(t, c.IOAPICID, e[2], name)
				assert.Zero(t, e[3], name)
				assert.Equal(t, c.IOAPICAddr, le.Uint32(e[4:]), name)
				assert.Zero(t, le.Uint32(e[8:]), "%s: GSI base", name)
				ioapics++
			case MADTTypeIntSrcOverride:
				require.Equal(t, 10, n)
				assert.Zero(t, e[2], "%s: bus ISA", name)
				assert.Equal(t, byte(c.SCIIRQ), e[3], "%s: source = SCI", name)
				assert.NotZero(t, e[3], "%s: no override for IRQ 0", name)
				assert.Equal(t, uint32(c.SCIIRQ), le.Uint32(e[4:]), "%s: GSI = SCI", name)
				assert.Equal(t, uint16(0x000D), le.Uint16(e[8:]), "%s: level, active high", name)
				overrides++
			case MADTTypeLocalAPICNMI:
				require.Equal(t, 6, n)
				assert.Equal(t, []byte{0xFF, 0, 0, 1}, e[2:6], "%s: all processors, flags 0, LINT1", name)
				nmis++
			default:
				t.Errorf("%s: unexpected MADT entry type %d", name, typ)
			}
			e = e[n:]
		}
		assert.Equal(t, c.CPUs, lapics, name)
		assert.Equal(t, 1, ioapics, name)
		assert.Equal(t, 1, overrides, name)
		assert.Equal(t, 1, nmis, name)
	}
}

func TestDSDTSleepStates(t *testing.T) {
	c := DefaultConfig(2)
	im, err := Build(c, 0xE0000)
	require.NoError(t, err)
	d := im.Tables["DSDT"][HeaderSize:]
	// Name (_S5, Package (0x04) { 0x07, 0x07, Zero, Zero })
	assert.True(t, bytes.Contains(d, []byte{0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0A, 0x07, 0x0A, 0x07, 0x00, 0x00}))
	// Name (_S3, Package (0x04) { 0x05, 0x05, Zero, Zero })
	assert.True(t, bytes.Contains(d, []byte{0x08, '_', 'S', '3', '_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00}))

	c.EnableS3 = false
	im, err = Build(c, 0xE0000)
	require.NoError(t, err)
	assert.False(t, bytes.Contains(im.Tables["DSDT"], []byte("_S3_")), "no \\_S3 unless EnableS3")
	assert.True(t, bytes.Contains(im.Tables["DSDT"], []byte("_S5_")))
}

func TestLayout(t *testing.T) {
	for name, c := range testConfigs() {
		im, err := Build(c, 0xE0000)
		require.NoError(t, err, name)
		assert.LessOrEqual(t, len(im.Bytes), MaxImageSize, name)
		assert.LessOrEqual(t, im.Base+uint64(len(im.Bytes)), uint64(0x100000), "%s: below 1 MiB at 0xE0000", name)
		assert.Equal(t, uint64(0xE0000+RSDPOffset), im.Addrs["RSDP"])
		assert.Equal(t, uint64(0xE0000+FACSOffset), im.Addrs["FACS"])
		assert.Equal(t, uint64(0xE0000+XSDTOffset), im.Addrs["XSDT"])
		assert.Equal(t, uint64(0xE0000+FADTOffset), im.Addrs["FACP"])
		assert.Equal(t, uint64(0xE0000+MADTOffset), im.Addrs["APIC"])

		type span struct {
			sig        string
			start, end uint64
		}
		var spans []span
		for sig, tb := range im.Tables {
			a := im.Addrs[sig]
			off := a - im.Base
			require.LessOrEqual(t, off+uint64(len(tb)), uint64(len(im.Bytes)), "%s %s", name, sig)
			assert.Equal(t, tb, im.Bytes[off:off+uint64(len(tb))], "%s %s: Tables slice matches Bytes", name, sig)
			assert.Zero(t, a%16, "%s %s: 16-byte aligned", name, sig)
			spans = append(spans, span{sig, a, a + uint64(len(tb))})
		}
		for i, a := range spans {
			for _, b := range spans[:i] {
				assert.False(t, a.start < b.end && b.start < a.end, "%s: %s overlaps %s", name, a.sig, b.sig)
			}
		}
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	a := buildDefault(t, 8)
	b := buildDefault(t, 8)
	assert.Equal(t, a.Bytes, b.Bytes)
}

func TestBuildRejects(t *testing.T) {
	_, err := Build(DefaultConfig(2), 0xE0010)
	assert.ErrorContains(t, err, "not 64-byte aligned")
	_, err = Build(DefaultConfig(2), 1<<32-0x40)
	assert.ErrorContains(t, err, "below 4 GiB")
	_, err = Build(DefaultConfig(0), 0xE0000)
	assert.ErrorContains(t, err, "CPUs = 0")
}

func TestValidate(t *testing.T) {
	for name, c := range testConfigs() {
		assert.NoError(t, c.Validate(), name)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no cpus", func(c *Config) { c.CPUs = 0 }, "CPUs = 0: must be 1 to 254"},
		{"too many cpus", func(c *Config) { c.CPUs = 255 }, "CPUs = 255"},
		{"ioapic id collides", func(c *Config) { c.IOAPICID = 1 }, "IOAPICID = 1 collides with the local APIC id of vCPU 1"},
		{"ioapic id broadcast", func(c *Config) { c.IOAPICID = 0xFF }, "IOAPICID = 0xFF"},
		{"no lapic addr", func(c *Config) { c.LocalAPICAddr = 0 }, "LocalAPICAddr is 0"},
		{"no ioapic addr", func(c *Config) { c.IOAPICAddr = 0 }, "IOAPICAddr is 0"},
		{"sci 0", func(c *Config) { c.SCIIRQ = 0 }, "SCIIRQ = 0"},
		{"sci on com1", func(c *Config) { c.SCIIRQ = 4 }, "taken by a legacy device"},
		{"sci not isa", func(c *Config) { c.SCIIRQ = 20 }, "must be an ISA IRQ"},
		{"no pm1 evt", func(c *Config) { c.PM1aEventPort = 0 }, "PM1aEventPort is 0"},
		{"no pm1 cnt", func(c *Config) { c.PM1aControlPort = 0 }, "PM1aControlPort is 0"},
		{"s5 type", func(c *Config) { c.SleepTypeS5 = 8 }, "SleepTypeS5 = 8"},
		{"s3 type", func(c *Config) { c.SleepTypeS3 = 9 }, "SleepTypeS3 = 9"},
		{"s3 equals s5", func(c *Config) { c.SleepTypeS3 = c.SleepTypeS5 }, "could not tell suspend from power-off"},
		{"pm overlap", func(c *Config) { c.PM1aControlPort = 0x602 }, "PM1aControlPort 0x602..0x603 overlaps PM1aEventPort 0x600..0x603"},
		{"timer overlap", func(c *Config) { c.PMTimerPort = 0x605 }, "PMTimerPort 0x605..0x608 overlaps PM1aControlPort"},
		{"pm on uart", func(c *Config) { c.PM1aEventPort = 0x3FC }, "overlaps COM1"},
		{"past 0xffff", func(c *Config) { c.PMTimerPort = 0xFFFE }, "runs past the last I/O port"},
	} {
		c := DefaultConfig(2)
		tc.change(&c)
		err := c.Validate()
		if assert.Error(t, err, tc.name) {
			assert.Contains(t, err.Error(), tc.want, tc.name)
		}
	}
	// Every problem is reported at once.
	err := Config{}.Validate()
	require.Error(t, err)
	for _, want := range []string{"CPUs = 0", "LocalAPICAddr", "IOAPICAddr", "SCIIRQ = 0", "PM1aEventPort", "PM1aControlPort"} {
		assert.Contains(t, err.Error(), want)
	}
	// S3 disabled: equal sleep types are fine.
	c := DefaultConfig(1)
	c.EnableS3 = false
	c.SleepTypeS3 = c.SleepTypeS5
	assert.NoError(t, c.Validate())
}
