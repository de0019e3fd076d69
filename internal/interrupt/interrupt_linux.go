package interrupt

import (
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ParentDeathSignal is what the kernel is asked to send when the parent
// exits (prctl PR_SET_PDEATHSIG). It is one that nobody sends to stop a
// process, so that it says which happened.
const ParentDeathSignal = syscall.SIGUSR2

var armed sync.Once

// watchParent asks the kernel for ParentDeathSignal when the parent exits.
// The request belongs to the thread that makes it, and lapses if that
// thread ends: it is made from one that never does.
func watchParent() {
	armed.Do(func() {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(ParentDeathSignal), 0, 0, 0)
			close(done)
			select {}
		}()
		<-done
	})
}

// watchReader calls gone once nobody reads f any more, when f is a pipe or
// a socket: the kernel reports an error condition on the writing end the
// moment its last reader closes, with no write needed. It returns at once
// for anything else (a terminal's end is SIGHUP; a file is always read).
// stop ends the watch.
func watchReader(f *os.File, gone func()) (stop func()) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil ||
		(st.Mode&unix.S_IFMT != unix.S_IFIFO && st.Mode&unix.S_IFMT != unix.S_IFSOCK) {
		return func() {}
	}
	wakeR, wakeW, err := os.Pipe()
	if err != nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer wakeR.Close()
		for {
			fds := []unix.PollFd{{Fd: int32(f.Fd())}, {Fd: int32(wakeR.Fd()), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
				return
			}
			switch {
			case fds[1].Revents != 0: // stop
				return
			case fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0:
				gone()
				return
			}
		}
	}()
	return func() {
		wakeW.Close()
		<-done
	}
}
