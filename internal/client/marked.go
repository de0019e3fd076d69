package client

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Marked is a process whose environment carries a marker variable: a
// client started with it, or one of its descendants, wherever it went.
type Marked struct {
	PID, PGID int
	Value     string // the marker's value
	Command   string // its command line, for messages
}

// FindMarked lists this system's processes whose environment has name set
// (read from /proc; none where there is no /proc). Processes of other users
// cannot be read and are not listed.
func FindMarked(name string) ([]Marked, error) {
	dirs, err := os.ReadDir("/proc")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	prefix := []byte(name + "=")
	self := os.Getpid()
	var out []Marked
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err != nil {
			continue // gone meanwhile, or not ours to read
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, prefix); ok {
				if m, ok := readMarked(pid, string(v)); ok {
					out = append(out, m)
				}
				break
			}
		}
	}
	return out, nil
}

// readMarked fills in pid's process group and command line; ok is false
// when it has exited (a zombie included).
func readMarked(pid int, value string) (Marked, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Marked{}, false
	}
	// "pid (comm) state ppid pgrp ...": the fields follow the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return Marked{}, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 3 || f[0] == "Z" {
		return Marked{}, false
	}
	pgid, err := strconv.Atoi(f[2])
	if err != nil {
		return Marked{}, false
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	cmd := strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	return Marked{PID: pid, PGID: pgid, Value: value, Command: cmd}, true
}

// End kills m's whole process group with SIGKILL; only m itself when that
// group is this process's own.
func (m Marked) End() error {
	target := -m.PGID
	if m.PGID <= 1 || m.PGID == syscall.Getpgrp() {
		target = m.PID
	}
	if err := syscall.Kill(target, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("end process %d (group %d): %w", m.PID, m.PGID, err)
	}
	return nil
}
