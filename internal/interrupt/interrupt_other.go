//go:build !linux

package interrupt

import (
	"os"
	"syscall"
)

// ParentDeathSignal never reports a parent's exit here: only Linux has the
// parent-death signal.
const ParentDeathSignal = syscall.Signal(-1)

func watchParent() {}

// watchReader does not watch here: a closed output is noticed at the next
// write.
func watchReader(*os.File, func()) (stop func()) { return func() {} }
