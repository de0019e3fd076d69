// Package magerun runs mage for MTTR lab. Mage compiles the magefile into a
// binary and runs that binary as its child, and both steps break a tool
// that has to be stopped cleanly and is run from parallel CI steps:
//
//   - Mage writes mage_output_file.go into the checkout, compiles, and
//     deletes it; two invocations at once delete each other's file and fail
//     with "error compiling magefiles".
//   - Mage ignores SIGINT and dies of SIGTERM or SIGHUP without passing them
//     on, so the targets never hear of them; `go tool`, which forwards every
//     signal to mage, then exits 0 because its tool died of a signal.
//
// So the build runs under a lock per checkout, and the compiled binary then
// replaces this process: `go tool mage` → targets, nothing in between. The
// binary runs in a process group of its own, so the signals that reach it
// are the ones `go tool` forwards, each once; a Ctrl-C in a terminal is not
// delivered twice (once by the terminal, once by go). Its exit status is
// the command's.
package magerun

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/magefile/mage/mage"
)

// Main runs mage with args (without the program name) and returns the exit
// status, unless it replaced this process with the targets' binary.
func Main(stdin io.Reader, stdout, stderr io.Writer, args []string) int {
	inv, cmd, err := mage.Parse(stderr, stdout, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		return 2
	}
	inv.Stdin, inv.Stdout, inv.Stderr = stdin, stdout, stderr
	if cmd != mage.None || inv.List || inv.Help || inv.Autocomplete {
		// Commands that do not run targets: mage as it is, one at a time.
		return serialized(inv, func() int { return mage.ParseAndRun(stdout, stderr, stdin, args) })
	}
	return runTargets(inv)
}
