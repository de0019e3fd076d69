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

	"github.com/mttrlab/mttr/internal/host"
)

// Marked is a process whose environment carries a marker variable: a
// client started with it, or one of its descendants, wherever it went.
type Marked struct {
	PID, PGID int
	Name      string // the marker variable
	Value     string // its value
	Command   string // its command line, for messages
}

// markedWith reports whether process pid's environment has name=value.
func markedWith(pid int, name, value string) bool {
	v, ok := envValue(pid, name)
	return ok && v == value
}

// envValue reads variable name from the environment process pid started
// with; ok is false when it has none, or it cannot be read (gone, or
// another user's).
func envValue(pid int, name string) (string, bool) {
	env, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil {
		return "", false
	}
	prefix := []byte(name + "=")
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, prefix); ok {
			return string(v), true
		}
	}
	return "", false
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
	self := os.Getpid()
	var out []Marked
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == self {
			continue
		}
		if v, ok := envValue(pid, name); ok {
			if m, ok := readMarked(pid, v); ok {
				m.Name = name
				out = append(out, m)
			}
		}
	}
	return out, nil
}

// readMarked fills in pid's process group and command line; ok is false
// when it has exited (a zombie included).
func readMarked(pid int, value string) (Marked, bool) {
	p, err := host.Stat(pid)
	if err != nil || p.State == 'Z' {
		return Marked{}, false
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	cmd := strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	return Marked{PID: pid, PGID: p.PGID, Value: value, Command: cmd}, true
}

// End kills m with SIGKILL, and its whole process group when the group's
// leader carries the same mark (a client's group, or one a client's
// descendant made): a group someone else leads is not ours to end.
func (m Marked) End() error {
	target := m.PID
	if m.PGID > 1 && m.PGID != syscall.Getpgrp() && markedWith(m.PGID, m.Name, m.Value) {
		target = -m.PGID
	}
	if err := syscall.Kill(target, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("end process %d (group %d): %w", m.PID, m.PGID, err)
	}
	return nil
}
