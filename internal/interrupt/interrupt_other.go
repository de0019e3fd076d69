//go:build !linux

package interrupt

import (
	"os"
	"syscall"
)

// parentDeathSignal never reports a parent's exit here: only Linux has the
// parent-death signal.
const parentDeathSignal = syscall.Signal(-1)

func watchParent(int) bool { return true }

func unwatchParent() {}

func quietCopy(f *os.File) *os.File { return f }
