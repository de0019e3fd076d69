package host

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Stat reads process pid's state, parent and group; an error wrapping
// fs.ErrNotExist when there is no such process.
func Stat(pid int) (Process, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Process{}, fmt.Errorf("process %d: %w", pid, err)
	}
	// "pid (comm) state ppid pgrp ...": the fields follow the last ')',
	// since comm may hold anything.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 3 || len(f[0]) != 1 {
		return Process{}, fmt.Errorf("process %d: unreadable stat %q", pid, b)
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgid, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return Process{}, fmt.Errorf("process %d: unreadable stat %q", pid, b)
	}
	return Process{State: f[0][0], PPID: ppid, PGID: pgid}, nil
}

// Alive reports whether process pid runs: it exists and is not a zombie
// (exited, waiting for its parent to notice).
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	p, err := Stat(pid)
	if errors.Is(err, fs.ErrNotExist) {
		if _, perr := os.Stat("/proc/self/stat"); perr != nil {
			return true // no /proc mounted: kill's answer stands
		}
		return false // it went away meanwhile
	}
	return err != nil || p.State != 'Z'
}

// Children lists the processes whose parent is pid.
func Children(pid int) []int {
	dirs, _ := os.ReadDir("/proc")
	var out []int
	for _, d := range dirs {
		if n, err := strconv.Atoi(d.Name()); err == nil {
			if p, err := Stat(n); err == nil && p.PPID == pid {
				out = append(out, n)
			}
		}
	}
	return out
}

// Reap waits until cmd's process has exited, calls exited while it is
// still a zombie (so that its process id, and the id of a group it leads,
// cannot have been reused yet), then reaps it with cmd.Wait. at is when the
// exit was seen.
func Reap(cmd *exec.Cmd, exited func()) (at time.Time, err error) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	at = time.Now()
	exited()
	return at, cmd.Wait()
}

// Machine reads this machine's limits.
func Machine() Limits {
	var l Limits
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < 1<<31 {
		l.Files = int(rl.Cur)
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			lo, err1 := strconv.Atoi(f[0])
			hi, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && hi >= lo {
				l.Ports = hi - lo + 1
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
					l.Available = kb << 10
				}
			}
		}
	}
	return l
}

// AwaitExit waits, at most timeout, until process pid (not necessarily a
// child of ours) has exited, through a pidfd, which becomes readable when
// it does. It reports whether it has.
func AwaitExit(pid int, timeout time.Duration) (bool, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return true, nil
	} else if err != nil {
		return false, fmt.Errorf("pidfd_open(%d): %w", pid, err)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left < 0 {
			left = 0
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left.Milliseconds()))
		switch {
		case errors.Is(err, unix.EINTR): // a signal (Go's own preemption) woke it: wait on
			continue
		case err != nil:
			return false, fmt.Errorf("poll pidfd of %d: %w", pid, err)
		}
		return n == 1, nil
	}
}
