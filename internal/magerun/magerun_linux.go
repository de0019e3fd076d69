package magerun

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/mttrlab/mttr/internal/interrupt"
)

// watchCommand asks the kernel for interrupt.ParentDeathSignal when the
// command's process exits, on the calling thread, which must be locked to
// its goroutine: the request goes with the thread through exec.
func watchCommand() {
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(interrupt.ParentDeathSignal), 0, 0, 0)
}

// pinned is the path that executes f itself, whatever its name now leads
// to.
func pinned(f *os.File) string { return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())) }
