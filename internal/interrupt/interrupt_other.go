//go:build !linux

package interrupt

import "syscall"

// ParentDeathSignal never reports a parent's exit here: only Linux has the
// parent-death signal.
const ParentDeathSignal = syscall.Signal(-1)

func watchParent() {}
