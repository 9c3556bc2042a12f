// Command daxpeek runs in the lab host (static, CGO_ENABLED=0) and prints
// bytes of a device-dax device, which supports only mmap (read(2) and dd
// see nothing):
//
//	daxpeek [--align BYTES] /dev/dax0.0 OFFSET LEN
//	PMVM-LAB daxpeek dev=/dev/dax0.0 offset=0x<off> len=<n> hex=<hex>
//	daxpeek --sum /dev/dax0.0
//	PMVM-LAB daxsum dev=/dev/dax0.0 size=<bytes> sha256=<hex>
//	daxpeek --scrub FILE /dev/dax0.0 OFFSET LEN
//	PMVM-LAB daxscrub dev=/dev/dax0.0 offset=0x<off> len=<n> saved=FILE
//	daxpeek --unscrub FILE /dev/dax0.0 OFFSET
//	PMVM-LAB daxunscrub dev=/dev/dax0.0 offset=0x<off> len=<n> from=FILE
//
// --scrub copies LEN bytes at OFFSET to FILE and zeroes them, as a cold
// reboot's firmware would; --unscrub writes FILE back there, so that the
// fault matrix can emulate a reboot and still resume the guest afterwards.
//
// The device is mapped MAP_SHARED with its alignment (read from
// /sys/bus/dax/devices/<dev>/align, else 2 MiB): the offset is rounded down
// and the length up to it. OFFSET and LEN are decimal or 0x hex.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/qa/guestbin/guestlib"
)

const defaultAlign = 2 << 20

func main() {
	align := flag.Uint64("align", 0, "mapping alignment (default: the device's sysfs align, else 2 MiB)")
	sum := flag.Bool("sum", false, "print the SHA-256 of the whole device instead")
	scrub := flag.String("scrub", "", "save OFFSET..+LEN to this file, then zero it")
	unscrub := flag.String("unscrub", "", "write this file (from --scrub) back at OFFSET")
	flag.Parse()
	if *scrub != "" || *unscrub != "" {
		if err := scrubMode(*scrub, *unscrub, flag.Args()); err != nil {
			fmt.Printf("PMVM-LAB daxpeek-error: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if *sum {
		if flag.NArg() != 1 {
			fmt.Fprintln(os.Stderr, "usage: daxpeek --sum /dev/daxX.Y")
			os.Exit(2)
		}
		if err := sumDevice(flag.Arg(0)); err != nil {
			fmt.Printf("PMVM-LAB daxpeek-error: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if flag.NArg() != 3 {
		fmt.Fprintln(os.Stderr, "usage: daxpeek [--align BYTES] /dev/daxX.Y OFFSET LEN")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Arg(1), flag.Arg(2), *align); err != nil {
		fmt.Printf("PMVM-LAB daxpeek-error: %v\n", err)
		os.Exit(1)
	}
}

// sumDevice hashes the whole device through a read-only shared mapping,
// to prove a refused resume left guest memory alone.
func sumDevice(dev string) error {
	b, err := os.ReadFile(filepath.Join("/sys/bus/dax/devices", filepath.Base(dev), "size"))
	if err != nil {
		return err
	}
	size, err := guestlib.ParseUint(strings.TrimSpace(string(b)))
	if err != nil || size == 0 {
		return fmt.Errorf("%s: bad size %q", dev, b)
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap %s (%d bytes): %w", dev, size, err)
	}
	defer unix.Munmap(mem)
	fmt.Printf("PMVM-LAB daxsum dev=%s size=%d sha256=%x\n", dev, size, sha256.Sum256(mem))
	return nil
}

func deviceAlign(dev string) uint64 {
	b, err := os.ReadFile(filepath.Join("/sys/bus/dax/devices", filepath.Base(dev), "align"))
	if err != nil {
		return defaultAlign
	}
	a, err := guestlib.ParseUint(strings.TrimSpace(string(b)))
	if err != nil || a == 0 {
		return defaultAlign
	}
	return a
}

func run(dev, offS, lenS string, align uint64) error {
	off, err := guestlib.ParseUint(offS)
	if err != nil {
		return fmt.Errorf("OFFSET %q: %w", offS, err)
	}
	n, err := guestlib.ParseUint(lenS)
	if err != nil {
		return fmt.Errorf("LEN %q: %w", lenS, err)
	}
	if n > 1<<20 {
		return fmt.Errorf("LEN %d: at most 1 MiB", n)
	}
	if align == 0 {
		align = deviceAlign(dev)
	}
	mapOff, mapLen, inner, err := guestlib.DaxWindow(off, n, align)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), int64(mapOff), int(mapLen), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap %s offset %#x length %#x (align %#x): %w", dev, mapOff, mapLen, align, err)
	}
	defer unix.Munmap(mem)
	fmt.Printf("PMVM-LAB daxpeek dev=%s offset=%#x len=%d hex=%s\n", dev, off, n, guestlib.Hex(mem[inner:inner+n]))
	return nil
}

// scrubMode runs --scrub FILE DEV OFFSET LEN or --unscrub FILE DEV OFFSET.
func scrubMode(scrub, unscrub string, args []string) error {
	if (scrub == "") == (unscrub == "") || (scrub != "" && len(args) != 3) || (unscrub != "" && len(args) != 2) {
		fmt.Fprintln(os.Stderr, "usage: daxpeek --scrub FILE /dev/daxX.Y OFFSET LEN | --unscrub FILE /dev/daxX.Y OFFSET")
		os.Exit(2)
	}
	dev := args[0]
	off, err := guestlib.ParseUint(args[1])
	if err != nil {
		return fmt.Errorf("OFFSET %q: %w", args[1], err)
	}
	var saved []byte
	n := uint64(0)
	if scrub != "" {
		if n, err = guestlib.ParseUint(args[2]); err != nil {
			return fmt.Errorf("LEN %q: %w", args[2], err)
		}
	} else {
		if saved, err = os.ReadFile(unscrub); err != nil {
			return err
		}
		n = uint64(len(saved))
	}
	align := deviceAlign(dev)
	if off%align != 0 || n%align != 0 || n == 0 {
		return fmt.Errorf("OFFSET %#x and LEN %#x must be non-zero multiples of the device alignment %#x", off, n, align)
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), int64(off), int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap %s offset %#x length %#x: %w", dev, off, n, err)
	}
	defer unix.Munmap(mem)
	if scrub != "" {
		if err := os.WriteFile(scrub, mem, 0o600); err != nil {
			return fmt.Errorf("save the region before zeroing it: %w", err)
		}
		clear(mem)
		fmt.Printf("PMVM-LAB daxscrub dev=%s offset=%#x len=%d saved=%s\n", dev, off, n, scrub)
		return nil
	}
	copy(mem, saved)
	fmt.Printf("PMVM-LAB daxunscrub dev=%s offset=%#x len=%d from=%s\n", dev, off, n, unscrub)
	return nil
}
