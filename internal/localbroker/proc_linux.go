package localbroker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// sysProcAttr puts the broker in a process group of its own and has the
// kernel SIGKILL it when the thread that started it ends.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

var starter struct {
	once sync.Once
	reqs chan startRequest
}

type startRequest struct {
	cmd *exec.Cmd
	err chan error
}

// startLocked starts cmd from one OS thread that stays locked to its
// goroutine for the life of our process. The parent-death signal fires
// when the thread that forked the child ends, not the process; Go ends a
// thread when a goroutine locked to it returns, so a broker started from
// whatever thread happens to run Start could die with someone else's
// LockOSThread. This thread never ends, so the signal comes only when our
// process does.
func startLocked(cmd *exec.Cmd) error {
	starter.once.Do(func() {
		starter.reqs = make(chan startRequest)
		go func() {
			runtime.LockOSThread() // never unlocked
			for r := range starter.reqs {
				r.err <- r.cmd.Start()
			}
		}()
	})
	r := startRequest{cmd: cmd, err: make(chan error, 1)}
	starter.reqs <- r
	return <-r.err
}

// awaitStopped returns once every thread of process pid is stopped.
func awaitStopped(ctx context.Context, pid int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for {
		stopped, err := allStopped(pid)
		if err != nil {
			return err
		}
		if stopped {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("process %d not stopped: %w", pid, context.Cause(ctx))
		case <-time.After(200 * time.Microsecond):
		}
	}
}

// allStopped reads the state of every thread of pid from /proc.
func allStopped(pid int) (bool, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("process %d: %w", pid, err)
	}
	for _, t := range tasks {
		stat, err := os.ReadFile(dir + "/" + t.Name() + "/stat")
		if errors.Is(err, os.ErrNotExist) { // the thread ended
			continue
		}
		if err != nil {
			return false, fmt.Errorf("process %d: %w", pid, err)
		}
		// "tid (comm) S ...": the state follows the last ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 >= len(s) {
			return false, fmt.Errorf("process %d: unreadable %s/stat", pid, t.Name())
		}
		switch s[i+2] {
		case 'T', 't':
		case 'Z', 'X':
			return false, fmt.Errorf("process %d has exited", pid)
		default:
			return false, nil
		}
	}
	return true, nil
}
