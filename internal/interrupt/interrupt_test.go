package interrupt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the processes under test; helperEnv says which
// part it plays.
const helperEnv = "MTTR_INTERRUPT_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "wait": // print "ready", then the reason once stopped
		ctx, _, stop := Context(context.Background())
		defer stop()
		fmt.Println("ready")
		<-ctx.Done()
		fmt.Fprintln(os.Stderr, Reason(ctx))
		os.Exit(3)
	case "parent": // start a "wait" child on our stdout and stderr, then wait to be killed
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), helperEnv+"=wait")
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		if err := child.Start(); err != nil {
			os.Exit(1)
		}
		// Waiting for the child blocks in wait4. A bare select {} with no
		// other goroutine is a deadlock the runtime may end at once, and a
		// parent gone before its child watches it is not the exit the test
		// asks about.
		_ = child.Wait()
		os.Exit(1)
	case "quiet": // print "ready", write nothing more until stopped, then say why on stderr
		ctx, cancel, stop := Context(context.Background())
		defer stop()
		out := Output(os.Stdout, cancel)
		defer out.Close()
		fmt.Fprintln(out, "ready")
		<-ctx.Done()
		fmt.Fprintln(os.Stderr, Reason(ctx))
		os.Exit(3)
	case "write": // print "ready", write to stdout until stopped, then say why on stderr
		ctx, cancel, stop := Context(context.Background())
		defer stop()
		out := Output(os.Stdout, cancel)
		fmt.Fprintln(out, "ready")
		for ctx.Err() == nil {
			fmt.Fprintln(out, "line")
		}
		fmt.Fprintln(os.Stderr, Reason(ctx))
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// helper starts the test binary as role with a pipe on its stdout, and
// returns once it printed "ready", with its stderr and its stdout, whose
// further lines are read and dropped.
func helper(t *testing.T, role string, setpgid bool) (*exec.Cmd, *strings.Builder, io.Closer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+role)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: setpgid}
	var errs strings.Builder
	cmd.Stderr = &errs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Process.Kill()
	})
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("%s: no ready line (%v)", role, sc.Err())
	}
	go func() {
		for sc.Scan() {
		}
	}()
	return cmd, &errs, out
}

// exitedWith waits for cmd and checks that it exited with status 3 (it saw
// its context end and said why), not killed by a signal.
func exitedWith(t *testing.T, cmd *exec.Cmd, errs *strings.Builder, reason string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if cmd.ProcessState.ExitCode() != 3 {
			t.Fatalf("helper ended with %v, want exit status 3; stderr:\n%s", err, errs)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("helper did not stop")
	}
	if got := strings.TrimSpace(errs.String()); !strings.Contains(got, reason) {
		t.Errorf("reason %q, want %q", got, reason)
	}
}

func TestStopSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			if sig == syscall.SIGHUP && signal.Ignored(sig) {
				t.Skip("run under nohup: the helper inherits SIGHUP ignored, and keeps it so")
			}
			cmd, errs, _ := helper(t, "wait", true)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			exitedWith(t, cmd, errs, signalName(sig))
		})
	}
}

// TestParentExit kills a process's parent with SIGKILL: the process must
// hear of it and say so.
func TestParentExit(t *testing.T) {
	parent, errs, _ := helper(t, "parent", true)
	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// The child shares the parent's stderr, so Wait returns once the
	// child, too, has closed it: after it said why it stopped.
	waited := make(chan struct{})
	go func() { _ = parent.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(20 * time.Second):
		t.Fatal("the child did not stop when its parent was killed")
	}
	if want := fmt.Sprintf("the process that started it (pid %d) exited", parent.Process.Pid); !strings.Contains(errs.String(), want) {
		t.Errorf("child said %q, want %q", errs.String(), want)
	}
}

// TestOutputClosed closes the reader of a process's stdout: instead of
// dying of SIGPIPE, the process stops the way it stops for Ctrl-C.
func TestOutputClosed(t *testing.T) {
	cmd, errs, out := helper(t, "write", false)
	out.Close()
	exitedWith(t, cmd, errs, "its output was closed")
}

// TestOutputClosedWhileQuiet guards that a command stops when the reader
// of its output goes away while it writes nothing (a run in an outage),
// not at its next line.
func TestOutputClosedWhileQuiet(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux watches the reader; elsewhere the next write notices")
	}
	cmd, errs, out := helper(t, "quiet", false)
	out.Close()
	exitedWith(t, cmd, errs, "its output was closed")
}

// TestReasonWhenTheParentEndsFirst guards that a stop signal is the cause
// of the context even when its parent was cancelled on the same signal
// first, as mage cancels its own context on Ctrl-C; and that a parent
// ended by anything else ends the context with the parent's cause. The
// race is repeated, since either handler may run first.
func TestReasonWhenTheParentEndsFirst(t *testing.T) {
	for i := range 300 {
		parent, cancelParent := context.WithCancel(context.Background())
		mage := make(chan os.Signal, 1)
		signal.Notify(mage, syscall.SIGINT)
		go func() {
			if _, ok := <-mage; ok {
				cancelParent()
			}
		}()
		ctx, cancel, stop := Context(parent)
		if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		<-ctx.Done()
		stop()
		signal.Stop(mage)
		close(mage)
		cancel(nil)
		cancelParent()
		if got := Reason(ctx); got != "SIGINT" {
			t.Fatalf("attempt %d: reason %q, want SIGINT (cause %v)", i+1, got, context.Cause(ctx))
		}
	}
	parent, cancelParent := context.WithCancelCause(context.Background())
	ctx, cancel, stop := Context(parent)
	defer stop()
	defer cancel(nil)
	why := errors.New("the caller's own reason")
	cancelParent(why)
	<-ctx.Done()
	if got := Reason(ctx); got != "" || !errors.Is(context.Cause(ctx), why) {
		t.Errorf("a parent ended without a signal: reason %q, cause %v", got, context.Cause(ctx))
	}
}
