// Command pattern runs inside lab guests (static, CGO_ENABLED=0) and
// proves that guest memory survives whatever the host did to it.
//
//	pattern fill --percent 50 --seed N [--ready FILE]
//	    Allocates that share of MemTotal (anonymous mmap, mlocked if
//	    possible, touched page by page), fills it with the deterministic
//	    pattern of qa/guestbin/guestlib, prints
//	      PMVM-GUEST pattern-filled bytes=<n> sha256=<hex> seed=<N> mlocked=<bool> secs=<t>
//	    and stays resident. On SIGUSR1 it re-checks every byte and prints
//	      PMVM-GUEST pattern-verify ok bytes=<n> round=<k> secs=<t>
//	      PMVM-GUEST pattern-verify BAD bytes=<n> first-bad-offset=0x<off> bad-pages=<m> round=<k> secs=<t>
//	    It exits on SIGTERM or SIGINT.
//
//	pattern locate --seed N [--ready FILE] [--hold=false]
//	    Writes guestlib.LocatePage(N) into one page of its own memory,
//	    mlocks it, looks up its guest-physical address in
//	    /proc/self/pagemap (root only) and prints
//	      PMVM-GUEST pattern-gpa=0x<hex> marker=<hex of the first 32 bytes>
//	    then holds the page until SIGTERM (unless --hold=false).
//
// --ready FILE is a state file for shell scripts in the guest: it is
// written once the first line is printed ("filled bytes=<n>" or
// "located gpa=0x<hex>") and, for fill, rewritten after every check
// ("verified ok round=<k> " or "verified BAD round=<k> ", trailing space
// included so "round=1 " never matches round 10). Errors print
// "PMVM-GUEST pattern-error: ..." and exit 1.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmvm/pmvm/qa/guestbin/guestlib"
)

const usage = `usage:
  pattern fill --percent P --seed N [--ready FILE]
  pattern locate --seed N [--ready FILE] [--hold=false]
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "fill":
		err = fill(os.Args[2:])
	case "locate":
		err = locate(os.Args[2:])
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Printf("PMVM-GUEST pattern-error: %v\n", err)
		os.Exit(1)
	}
}

type seedFlag uint64

func (s *seedFlag) String() string { return fmt.Sprint(uint64(*s)) }
func (s *seedFlag) Set(v string) error {
	n, err := guestlib.ParseUint(v)
	*s = seedFlag(n)
	return err
}

// ready replaces the state file atomically (a reader never sees it empty).
func ready(path, state string) error {
	if path == "" {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(state+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func fill(args []string) error {
	fs := flag.NewFlagSet("pattern fill", flag.ExitOnError)
	percent := fs.Int("percent", 50, "share of MemTotal to fill, 1..90")
	var seed seedFlag
	fs.Var(&seed, "seed", "pattern seed (decimal or 0x hex)")
	readyFile := fs.String("ready", "", "create this file once filled")
	fs.Parse(args)
	if *percent < 1 || *percent > 90 {
		return fmt.Errorf("--percent %d: want 1..90", *percent)
	}
	mi, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return err
	}
	total, err := guestlib.MemTotal(mi)
	if err != nil {
		return err
	}
	size := guestlib.FillSize(total, *percent)
	if size == 0 {
		return fmt.Errorf("MemTotal %d bytes: nothing to fill", total)
	}
	t0 := time.Now()
	mem, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	// mlock faults every page in now and keeps them out of swap and
	// reclaim; without it the fill below still touches each page.
	locked := unix.Mlock(mem) == nil
	h := sha256.New()
	for p := 0; p*guestlib.PageSize < len(mem); p++ {
		page := mem[p*guestlib.PageSize : (p+1)*guestlib.PageSize]
		guestlib.FillPage(page, uint64(seed), uint64(p))
		h.Write(page)
	}
	fmt.Printf("PMVM-GUEST pattern-filled bytes=%d sha256=%x seed=%d mlocked=%t secs=%.1f\n",
		size, h.Sum(nil), uint64(seed), locked, time.Since(t0).Seconds())
	if err := ready(*readyFile, fmt.Sprintf("filled bytes=%d", size)); err != nil {
		return err
	}

	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	round := 0
	for s := range sig {
		if s != syscall.SIGUSR1 {
			fmt.Printf("PMVM-GUEST pattern-exit signal=%v rounds=%d\n", s, round)
			return nil
		}
		round++
		t := time.Now()
		bad, pages := guestlib.Verify(mem, uint64(seed))
		verdict := "ok"
		if bad < 0 {
			fmt.Printf("PMVM-GUEST pattern-verify ok bytes=%d round=%d secs=%.1f\n", size, round, time.Since(t).Seconds())
		} else {
			verdict = "BAD"
			fmt.Printf("PMVM-GUEST pattern-verify BAD bytes=%d first-bad-offset=%#x bad-pages=%d round=%d secs=%.1f\n",
				size, bad, pages, round, time.Since(t).Seconds())
		}
		if err := ready(*readyFile, fmt.Sprintf("verified %s round=%d ", verdict, round)); err != nil {
			return err
		}
	}
	return nil
}

func locate(args []string) error {
	fs := flag.NewFlagSet("pattern locate", flag.ExitOnError)
	var seed seedFlag
	fs.Var(&seed, "seed", "marker seed (decimal or 0x hex)")
	readyFile := fs.String("ready", "", "create this file once the address is printed")
	hold := fs.Bool("hold", true, "keep the page (and the process) until SIGTERM")
	fs.Parse(args)

	mem, err := unix.Mmap(-1, 0, guestlib.PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	copy(mem, guestlib.LocatePage(uint64(seed)))
	if err := unix.Mlock(mem); err != nil {
		return fmt.Errorf("mlock: %w", err)
	}
	vaddr := uint64(addrOf(mem))
	gpa, err := physAddr(vaddr)
	if err != nil {
		return err
	}
	// Read it again: an mlocked page can still be migrated by compaction
	// (the guest init turns that off); a stable answer is the one to trust.
	time.Sleep(100 * time.Millisecond)
	if again, err := physAddr(vaddr); err != nil || again != gpa {
		return fmt.Errorf("page moved from %#x to %#x (%v) while locating it", gpa, again, err)
	}
	fmt.Printf("PMVM-GUEST pattern-gpa=%#x marker=%s\n", gpa, guestlib.Hex(mem[:guestlib.MarkerLen]))
	if err := ready(*readyFile, fmt.Sprintf("located gpa=%#x", gpa)); err != nil {
		return err
	}
	if !*hold {
		return nil
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

func physAddr(vaddr uint64) (uint64, error) {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], guestlib.PagemapOffset(vaddr)); err != nil {
		return 0, fmt.Errorf("read pagemap entry of %#x: %w", vaddr, err)
	}
	return guestlib.PhysAddr(binary.LittleEndian.Uint64(b[:]), vaddr)
}
