// Command testsummary prints make test's closing summary from the records
// the test binaries left in $PMVM_TEST_SUMMARY (qa/labrun): where each
// package that needs a KVM host ran (this machine or a lab host) with its
// result, and the lab tests that passed only on a second attempt.
//
//	go run ./qa/cmd/testsummary FILE
package main

import (
	"fmt"
	"os"

	"github.com/pmvm/pmvm/qa/labrun"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: testsummary FILE")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if os.IsNotExist(err) {
		labrun.WriteSummary(os.Stdout, nil)
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
	defer f.Close()
	recs, err := labrun.ReadSummary(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
	labrun.WriteSummary(os.Stdout, recs)
}
