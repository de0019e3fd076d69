//go:build !linux

package host

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// Stat needs Linux's /proc.
func Stat(pid int) (Process, error) {
	return Process{}, fmt.Errorf("process %d: %w", pid, errors.ErrUnsupported)
}

// Alive is kill's answer: without /proc a zombie cannot be told apart.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Children needs Linux's /proc: none known.
func Children(int) []int { return nil }

// Reap waits for cmd; without waitid's WNOWAIT, exited runs just after the
// process was reaped.
func Reap(cmd *exec.Cmd, exited func()) (time.Time, error) {
	err := cmd.Wait()
	at := time.Now()
	exited()
	return at, err
}

// Machine knows no limits here.
func Machine() Limits { return Limits{} }

// AwaitExit needs Linux's pidfd.
func AwaitExit(pid int, _ time.Duration) (bool, error) {
	return false, fmt.Errorf("process %d: %w", pid, errors.ErrUnsupported)
}
