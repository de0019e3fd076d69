package localbroker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBrokerDiesWithItsParent SIGKILLs a parent process (this test binary,
// run again) that started a broker, and expects the broker to die with it.
func TestBrokerDiesWithItsParent(t *testing.T) {
	f := newFixture(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join([]string{f.dir, f.addr, f.cert, f.key}, " "))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if strings.HasPrefix(s.Text(), "ready ") {
				ready <- s.Text()
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	var pid int
	select {
	case l := <-ready:
		if pid, err = strconv.Atoi(strings.TrimPrefix(l, "ready ")); err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the parent process never reported a listening broker")
	}
	exited, err := exitOf(pid)
	if err != nil {
		t.Fatalf("broker process %d: %v", pid, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if err := exited(5 * time.Second); err != nil {
		t.Fatalf("broker process %d after its parent was killed: %v", pid, err)
	}
}

// exitOf opens a pidfd for process pid, which need not be our child, and
// returns a function that waits at most timeout for the process to exit.
func exitOf(pid int) (func(timeout time.Duration) error, error) {
	const sysPidfdOpen = 434 // the same on every Linux architecture
	fd, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if errno != 0 {
		return nil, fmt.Errorf("pidfd_open: %w", errno)
	}
	return func(timeout time.Duration) error {
		defer syscall.Close(int(fd))
		deadline := time.Now().Add(timeout)
		for {
			var set syscall.FdSet
			set.Bits[fd/64] |= 1 << (fd % 64)
			left := time.Until(deadline)
			if left < 0 {
				left = 0
			}
			tv := syscall.NsecToTimeval(left.Nanoseconds())
			n, err := syscall.Select(int(fd)+1, &set, nil, nil, &tv)
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case err != nil:
				return fmt.Errorf("select on pidfd: %w", err)
			case n == 0:
				return fmt.Errorf("still running %s later", timeout)
			default:
				return nil // readable: the process exited
			}
		}
	}, nil
}
