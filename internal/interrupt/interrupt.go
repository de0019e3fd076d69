// Package interrupt turns every way a command can be told to stop into the
// cancellation of one context, whose cause says which: SIGINT (Ctrl-C),
// SIGTERM (kill, a CI cancel, systemd), SIGHUP (its terminal closed), the
// exit of the process that started it, and its output closing under it (a
// reader such as `head` that went away). Whatever runs under that context
// then stops the way Ctrl-C stops it: it cleans up, and the command exits
// non-zero. It believes a process doing work for a command must not
// outlive the command, nor die of a signal before it has cleaned up.
package interrupt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// Stopped is the cause of a context that a stop request cancelled.
type Stopped struct {
	Reason string // e.g. "SIGTERM", "its output was closed"
}

func (s *Stopped) Error() string { return "stopped: " + s.Reason }

// Reason says which stop request ended ctx; empty when it ended otherwise.
func Reason(ctx context.Context) string {
	var s *Stopped
	if errors.As(context.Cause(ctx), &s) {
		return s.Reason
	}
	return ""
}

// CommandEnv names the variable in which whoever starts this process in
// place of a command's own (internal/magerun, for `go tool mage`) passes
// that command's process id: the parent to watch, even when it has exited
// before Context could look.
const CommandEnv = "MTTR_COMMAND_PID"

// Context returns a copy of parent that is cancelled when SIGINT, SIGTERM or
// SIGHUP (unless this process started with it ignored, as nohup does)
// reaches this process or, on Linux, when the process that started it
// exits. Writes to a closed stdout or stderr fail with EPIPE from then on,
// instead of killing the process (see Output). cancel cancels it with a
// cause of the caller's; stop releases the signals once the command is
// done.
func Context(parent context.Context) (ctx context.Context, cancel context.CancelCauseFunc, stop func()) {
	// Not derived from parent directly: mage cancels its context on the
	// same Ctrl-C, and a cancellation propagated from it would carry no
	// reason. The loop below takes the parent's end and looks for the
	// stop signal first.
	ctx, cancel = context.WithCancelCause(context.WithoutCancel(parent))
	parentDone := parent.Done()
	parentPID := os.Getppid()
	if pid, err := strconv.Atoi(os.Getenv(CommandEnv)); err == nil && pid > 0 {
		parentPID = pid
	}
	parentGone := &Stopped{Reason: fmt.Sprintf("the process that started it (pid %d) exited", parentPID)}

	// Nobody reads this channel: asking for SIGPIPE is what makes the Go
	// runtime return EPIPE for descriptors 1 and 2 rather than raise it.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	sigs := make(chan os.Signal, 4)
	stopSignals := []os.Signal{syscall.SIGINT, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		stopSignals = append(stopSignals, syscall.SIGHUP)
	}
	if ParentDeathSignal > 0 {
		stopSignals = append(stopSignals, ParentDeathSignal)
	}
	signal.Notify(sigs, stopSignals...)
	watchParent()
	if os.Getppid() != parentPID { // it exited before the watch began
		cancel(parentGone)
	}
	done := make(chan struct{})
	onSignal := func(s os.Signal) {
		if s != ParentDeathSignal {
			cancel(&Stopped{Reason: signalName(s)})
		} else if os.Getppid() != parentPID {
			// The kernel also signals when the parent's thread that
			// started this process ends; only a new parent means the
			// parent process is gone.
			cancel(parentGone)
		}
	}
	go func() {
		for {
			select {
			case s := <-sigs:
				onSignal(s)
			case <-parentDone:
				parentDone = nil
				// The runtime hands a signal to each channel that asked for
				// it in turn: the parent's owner may have acted on it before
				// it reached ours.
				select {
				case s := <-sigs:
					onSignal(s)
				case <-time.After(signalSkew):
				case <-done:
					return
				}
				cancel(context.Cause(parent))
			case <-done:
				return
			}
		}
	}()
	return ctx, cancel, func() {
		signal.Stop(sigs)
		close(done)
	}
}

// signalSkew bounds how long after its parent ended a context waits for
// the stop signal that may have ended the parent too.
const signalSkew = 100 * time.Millisecond

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	}
	return s.String()
}

// ErrOutputClosed is why Output stops a command.
var ErrOutputClosed = &Stopped{Reason: "its output was closed"}

// Output returns a writer to f (the command's stdout or stderr) that, once
// whatever read f has gone away, cancels the command with ErrOutputClosed
// and discards what follows. On Linux a pipe or socket is watched, so the
// command stops when its reader goes, not at its next line (which may be
// an outage away); elsewhere at the next write (EPIPE, under Context).
// Close ends the watch.
func Output(f *os.File, cancel context.CancelCauseFunc) io.WriteCloser {
	o := &output{f: f, cancel: cancel}
	o.unwatch = watchReader(f, func() { cancel(ErrOutputClosed) })
	return o
}

type output struct {
	f       *os.File
	cancel  context.CancelCauseFunc
	closed  bool
	unwatch func()
}

// Close ends the watch of the reader; it does not close f.
func (o *output) Close() error {
	o.unwatch()
	return nil
}

func (o *output) Write(p []byte) (int, error) {
	if o.closed {
		return len(p), nil
	}
	n, err := o.f.Write(p)
	if errors.Is(err, syscall.EPIPE) {
		o.closed = true
		o.cancel(ErrOutputClosed)
		return len(p), nil
	}
	return n, err
}
