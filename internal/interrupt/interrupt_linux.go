package interrupt

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// parentDeathSignal is what the kernel sends when the parent exits. It is
// one that nobody sends to stop a process, so that it says which happened
// (the kernel also sends it when only the parent's thread that started
// this process ends, while the parent is being killed).
const parentDeathSignal = syscall.SIGUSR2

// watchParent asks the kernel for parentDeathSignal when the parent exits,
// and reports whether the parent was still the one of parentPID once it
// had asked.
func watchParent(parentPID int) bool {
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(parentDeathSignal), 0, 0, 0)
	return os.Getppid() == parentPID
}

// unwatchParent takes the request back.
func unwatchParent() { _ = unix.Prctl(unix.PR_SET_PDEATHSIG, 0, 0, 0, 0) }

// quietCopy returns a new descriptor for f: the Go runtime kills a process
// with SIGPIPE for a write to a closed pipe on descriptors 1 and 2 only; on
// any other it returns EPIPE.
func quietCopy(f *os.File) *os.File {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return f
	}
	return os.NewFile(uintptr(fd), f.Name())
}
