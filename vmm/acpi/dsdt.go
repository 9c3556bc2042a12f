package acpi

// DSDT (ACPI 6.5, section 5.2.11.1). Revision 2: integers are 64-bit.
const DSDTRevision = 2

// dsdtAML returns the DSDT's AML body, which reads as this ASL:
//
//	Name (\_S0, Package (0x04) { Zero, Zero, Zero, Zero })
//	Name (\_S3, Package (0x04) { S3, S3, Zero, Zero })  // only if EnableS3
//	Name (\_S5, Package (0x04) { S5, S5, Zero, Zero })
//	Scope (\_SB)
//	{
//	    Device (COM1) {
//	        Name (_HID, EisaId ("PNP0501"))
//	        Name (_UID, One)
//	        Name (_STA, 0x0F)
//	        Name (_CRS, ResourceTemplate () {
//	            IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08)
//	            IRQNoFlags () {4}
//	        })
//	    }
//	    Device (COM2) { ... _UID 2, 0x02F8, IRQ 3 }
//	    Device (RTC) {
//	        Name (_HID, EisaId ("PNP0B00"))
//	        Name (_STA, 0x0F)
//	        Name (_CRS, ResourceTemplate () {
//	            IO (Decode16, 0x0070, 0x0070, 0x01, 0x02)
//	            IRQNoFlags () {8}
//	        })
//	    }
//	    Device (KBD) {
//	        Name (_HID, EisaId ("PNP0303"))
//	        Name (_STA, 0x0F)
//	        Name (_CRS, ResourceTemplate () {
//	            IO (Decode16, 0x0060, 0x0060, 0x01, 0x01)
//	            IO (Decode16, 0x0064, 0x0064, 0x01, 0x01)
//	            IRQNoFlags () {1}
//	        })
//	    }
//	}
//
// \_S0 lets ACPICA's wake path write SLP_TYP = 0 (without SLP_EN) as real
// chipsets expect. The devices sit directly under \_SB: with no PCI host
// bridge there is no bus to hang an ISA bridge on, and Linux's PNP-ACPI layer
// enumerates them from there (serial8250, rtc_cmos, i8042 bind to them).
// Names are written relative to the root (the DSDT's scope), "_SB" rather
// than `\_SB`, which is what iasl emits for the same ASL: the tests compare
// these bytes with iasl's. Status is a Name, not a method: Name (_STA, 0x0F)
// is legal and ACPICA evaluates it like a method returning the integer.
func dsdtAML(c Config) []byte {
	sleep := func(name string, typ uint8) []byte {
		return AMLName(name, AMLPackage(
			AMLInteger(uint64(typ)), AMLInteger(uint64(typ)), AMLInteger(0), AMLInteger(0)))
	}
	var body []byte
	body = append(body, sleep("_S0", 0)...)
	if c.EnableS3 {
		body = append(body, sleep("_S3", c.SleepTypeS3)...)
	}
	body = append(body, sleep("_S5", c.SleepTypeS5)...)

	present := AMLName("_STA", AMLInteger(0x0F)) // present, enabled, shown in UI, functioning
	com := func(name string, uid uint64, port uint16, irq uint8) []byte {
		return AMLDevice(name,
			AMLName("_HID", AMLEISAID("PNP0501")), // 16550A-compatible COM port
			AMLName("_UID", AMLInteger(uid)),
			present,
			AMLName("_CRS", AMLResourceTemplate(
				AMLIO16(port, port, 1, 8),
				AMLIRQNoFlags(irq),
			)),
		)
	}
	body = append(body, AMLScope("_SB",
		com("COM1", 1, COM1Port, COM1IRQ),
		com("COM2", 2, COM2Port, COM2IRQ),
		AMLDevice("RTC",
			AMLName("_HID", AMLEISAID("PNP0B00")), // AT real-time clock
			present,
			AMLName("_CRS", AMLResourceTemplate(
				AMLIO16(RTCPort, RTCPort, 1, 2),
				AMLIRQNoFlags(RTCIRQ),
			)),
		),
		AMLDevice("KBD",
			AMLName("_HID", AMLEISAID("PNP0303")), // IBM enhanced keyboard (8042)
			present,
			AMLName("_CRS", AMLResourceTemplate(
				AMLIO16(I8042Data, I8042Data, 1, 1),
				AMLIO16(I8042Cmd, I8042Cmd, 1, 1),
				AMLIRQNoFlags(I8042IRQ),
			)),
		),
	)...)
	return body
}

func buildDSDT(c Config) []byte {
	body := dsdtAML(c)
	t := newTable("DSDT", DSDTRevision, "DSDT", HeaderSize+len(body))
	copy(t[HeaderSize:], body)
	finishTable(t)
	return t
}
