// Command mage is Mage for MTTR lab: `go tool mage <target>` runs it. It is
// mage itself (github.com/magefile/mage), run through internal/magerun so
// that parallel invocations in one checkout are safe and a signal sent to
// the command reaches the targets once.
package main

import (
	"os"

	"github.com/mttrlab/mttr/internal/magerun"
)

func main() { os.Exit(magerun.Main(os.Stdin, os.Stdout, os.Stderr, os.Args[1:])) }
