package acpi

import "encoding/binary"

// FADT, signature "FACP" (ACPI 6.5, section 5.2.9, "FADT Format"), revision 6
// minor 5: 276 bytes. Offsets are from the start of the table.
const (
	FADTRevision      = 6
	FADTMinorRevision = 5
	FADTSize          = 276

	FADTFirmwareCtrlOffset       = 36  // 4: FACS address (32-bit)
	FADTDSDTOffset               = 40  // 4: DSDT address (32-bit)
	FADTPreferredPMProfileOffset = 45  // 1 (offset 44 is reserved, was INT_MODEL)
	FADTSCIIntOffset             = 46  // 2: SCI_INT, ISA IRQ of the SCI
	FADTSMICmdOffset             = 48  // 4: SMI_CMD, 0 = ACPI mode always on
	FADTACPIEnableOffset         = 52  // 1
	FADTACPIDisableOffset        = 53  // 1
	FADTS4BIOSReqOffset          = 54  // 1
	FADTPStateCntOffset          = 55  // 1
	FADTPM1aEvtBlkOffset         = 56  // 4: PM1a_EVT_BLK port
	FADTPM1bEvtBlkOffset         = 60  // 4
	FADTPM1aCntBlkOffset         = 64  // 4: PM1a_CNT_BLK port
	FADTPM1bCntBlkOffset         = 68  // 4
	FADTPM2CntBlkOffset          = 72  // 4
	FADTPMTmrBlkOffset           = 76  // 4: PM_TMR_BLK port
	FADTGPE0BlkOffset            = 80  // 4
	FADTGPE1BlkOffset            = 84  // 4
	FADTPM1EvtLenOffset          = 88  // 1
	FADTPM1CntLenOffset          = 89  // 1
	FADTPM2CntLenOffset          = 90  // 1
	FADTPMTmrLenOffset           = 91  // 1
	FADTGPE0BlkLenOffset         = 92  // 1
	FADTGPE1BlkLenOffset         = 93  // 1
	FADTGPE1BaseOffset           = 94  // 1
	FADTCstCntOffset             = 95  // 1
	FADTPLvl2LatOffset           = 96  // 2
	FADTPLvl3LatOffset           = 98  // 2
	FADTFlushSizeOffset          = 100 // 2
	FADTFlushStrideOffset        = 102 // 2
	FADTDutyOffsetOffset         = 104 // 1
	FADTDutyWidthOffset          = 105 // 1
	FADTDayAlrmOffset            = 106 // 1
	FADTMonAlrmOffset            = 107 // 1
	FADTCenturyOffset            = 108 // 1: CMOS index of the century byte
	FADTIAPCBootArchOffset       = 109 // 2
	FADTFlagsOffset              = 112 // 4 (offset 111 is reserved)
	FADTResetRegOffset           = 116 // 12: GAS
	FADTResetValueOffset         = 128 // 1
	FADTARMBootArchOffset        = 129 // 2
	FADTMinorVersionOffset       = 131 // 1
	FADTXFirmwareCtrlOffset      = 132 // 8: X_FIRMWARE_CTRL
	FADTXDSDTOffset              = 140 // 8: X_DSDT
	FADTXPM1aEvtBlkOffset        = 148 // 12: GAS
	FADTXPM1bEvtBlkOffset        = 160 // 12
	FADTXPM1aCntBlkOffset        = 172 // 12
	FADTXPM1bCntBlkOffset        = 184 // 12
	FADTXPM2CntBlkOffset         = 196 // 12
	FADTXPMTmrBlkOffset          = 208 // 12
	FADTXGPE0BlkOffset           = 220 // 12
	FADTXGPE1BlkOffset           = 232 // 12
	FADTSleepControlRegOffset    = 244 // 12 (hardware-reduced only; zero here)
	FADTSleepStatusRegOffset     = 256 // 12 (hardware-reduced only; zero here)
	FADTHypervisorVendorOffset   = 268 // 8
)

// FADT fixed feature flags ("Fixed ACPI Description Table Fixed Feature
// Flags") this package may set.
const (
	FADTFlagWBINVD        = 1 << 0  // WBINVD works
	FADTFlagProcC1        = 1 << 2  // C1 (HLT) works on all processors
	FADTFlagPwrButton     = 1 << 4  // 1 = no fixed-feature power button
	FADTFlagSlpButton     = 1 << 5  // 1 = no fixed-feature sleep button
	FADTFlagFixRTC        = 1 << 6  // 1 = RTC wake status is not in PM1 status (no RTC_STS)
	FADTFlagTmrValExt     = 1 << 8  // 1 = the PM timer is 32 bits, 0 = 24 bits
	FADTFlagResetRegSup   = 1 << 10 // RESET_REG is valid
	FADTFlagHWReducedACPI = 1 << 20 // never set here
)

// IA-PC boot architecture flags ("Fixed ACPI Description Table Boot IA-PC
// Boot Architecture Flags").
const (
	BootArchLegacyDevices = 1 << 0 // ISA/LPC legacy devices (UARTs, RTC...) exist
	BootArch8042          = 1 << 1 // an 8042 keyboard controller exists
	BootArchVGANotPresent = 1 << 2
	BootArchMSINotSupp    = 1 << 3
	BootArchNoCMOSRTC     = 1 << 5
)

// PM register block lengths in bytes (the 32-bit *_LEN fields; the X_ GAS
// bit widths are 8 times these).
const (
	pm1EvtLen = 4 // PM1 status (2) + PM1 enable (2)
	pm1CntLen = 2
	pmTmrLen  = 4
)

// PMTimer32Bit is true: the FADT sets TMR_VAL_EXT, so the VMM's PM timer must
// return all 32 bits of a free-running 3.579545 MHz counter (Linux's acpi_pm
// clocksource masks to 24 bits anyway; ACPICA's AcpiGetTimer uses 32).
// TMR_STS / TMR_EN (PM1 bit 0) need not raise an SCI: Linux never enables it.
const PMTimer32Bit = true

// PM1 register bits the VMM's PM1 block model needs (bit positions from the
// ACPI spec's PM1 status, enable and control register tables).
const (
	PM1StsTmr    = 1 << 0  // PM1 status: TMR_STS
	PM1StsGbl    = 1 << 5  // GBL_STS
	PM1StsPwrBtn = 1 << 8  // PWRBTN_STS
	PM1StsSlpBtn = 1 << 9  // SLPBTN_STS
	PM1StsRTC    = 1 << 10 // RTC_STS
	PM1StsWak    = 1 << 15 // WAK_STS: set by the VMM when it wakes the guest from S3

	PM1EnTmr    = 1 << 0 // PM1 enable: TMR_EN
	PM1EnGbl    = 1 << 5 // GBL_EN
	PM1EnPwrBtn = 1 << 8 // PWRBTN_EN
	PM1EnSlpBtn = 1 << 9 // SLPBTN_EN
	PM1EnRTC    = 1 << 10

	PM1CntSCIEn       = 1 << 0 // SCI_EN: must always read as 1 (ACPI mode, no SMI_CMD)
	PM1CntSlpTypShift = 10     // SLP_TYP: bits 10-12
	PM1CntSlpTypMask  = 7 << PM1CntSlpTypShift
	PM1CntSlpEn       = 1 << 13 // SLP_EN: write-only, reads as 0; enter the state in SLP_TYP
)

// buildFADT returns the FADT for c pointing at the FACS and DSDT addresses.
//
// Choices: no SMI_CMD (ACPI mode always on), PM1a blocks only, a 32-bit PM
// timer if present, no GPE blocks, C1 only (P_LVL2/3 latencies above the "not
// supported" limits), CMOS century at index 0x32, IAPC_BOOT_ARCH = legacy
// devices + 8042, no fixed sleep button, no RTC_STS, and the 32-bit and X_
// address fields filled with equal values (ACPICA warns when they differ).
func buildFADT(c Config, facs, dsdt uint64) []byte {
	t := newTable("FACP", FADTRevision, "FACP", FADTSize)
	le := binary.LittleEndian

	le.PutUint32(t[FADTFirmwareCtrlOffset:], uint32(facs))
	le.PutUint32(t[FADTDSDTOffset:], uint32(dsdt))
	t[FADTPreferredPMProfileOffset] = 0 // unspecified
	le.PutUint16(t[FADTSCIIntOffset:], c.SCIIRQ)
	// SMI_CMD, ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT stay 0.

	le.PutUint32(t[FADTPM1aEvtBlkOffset:], uint32(c.PM1aEventPort))
	le.PutUint32(t[FADTPM1aCntBlkOffset:], uint32(c.PM1aControlPort))
	le.PutUint32(t[FADTPMTmrBlkOffset:], uint32(c.PMTimerPort))
	t[FADTPM1EvtLenOffset] = pm1EvtLen
	t[FADTPM1CntLenOffset] = pm1CntLen
	if c.PMTimerPort != 0 {
		t[FADTPMTmrLenOffset] = pmTmrLen
	}
	// No PM2, no GPE0/GPE1 blocks, no _CST support (CST_CNT 0).
	le.PutUint16(t[FADTPLvl2LatOffset:], 0x0FFF) // > 100: C2 not supported
	le.PutUint16(t[FADTPLvl3LatOffset:], 0x0FFF) // > 1000: C3 not supported
	t[FADTCenturyOffset] = RTCCentury
	le.PutUint16(t[FADTIAPCBootArchOffset:], BootArchLegacyDevices|BootArch8042)

	flags := uint32(FADTFlagWBINVD | FADTFlagProcC1 | FADTFlagSlpButton | FADTFlagFixRTC)
	if !c.PowerButton {
		flags |= FADTFlagPwrButton
	}
	if c.PMTimerPort != 0 && PMTimer32Bit {
		flags |= FADTFlagTmrValExt
	}
	if c.ResetPort != 0 {
		flags |= FADTFlagResetRegSup
		ioGAS(c.ResetPort, 1, AccessByte).put(t[FADTResetRegOffset:])
		t[FADTResetValueOffset] = c.ResetValue
	}
	le.PutUint32(t[FADTFlagsOffset:], flags)
	t[FADTMinorVersionOffset] = FADTMinorRevision

	le.PutUint64(t[FADTXFirmwareCtrlOffset:], facs)
	le.PutUint64(t[FADTXDSDTOffset:], dsdt)
	// PM1 status and enable are 16-bit registers, PM1 control is 16-bit, the
	// timer 32-bit: the access sizes say so.
	ioGAS(c.PM1aEventPort, pm1EvtLen, AccessWord).put(t[FADTXPM1aEvtBlkOffset:])
	ioGAS(c.PM1aControlPort, pm1CntLen, AccessWord).put(t[FADTXPM1aCntBlkOffset:])
	ioGAS(c.PMTimerPort, pmTmrLen, AccessDWord).put(t[FADTXPMTmrBlkOffset:])

	finishTable(t)
	return t
}
