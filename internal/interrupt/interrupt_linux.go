package interrupt

import (
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
