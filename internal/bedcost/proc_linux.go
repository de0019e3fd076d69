package bedcost

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// Host is the busy CPU time of all the host's CPUs so far: every state
// but idle and waiting for I/O, from /proc/stat.
func Host() (time.Duration, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("host cpu: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, fmt.Errorf("host cpu: /proc/stat is empty")
	}
	// cpu user nice system idle iowait irq softirq steal guest guest_nice
	fields := strings.Fields(sc.Text())
	if len(fields) < 8 || fields[0] != "cpu" {
		return 0, fmt.Errorf("host cpu: unreadable /proc/stat line %q", sc.Text())
	}
	var busy int64
	for i, f := range fields[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("host cpu: unreadable /proc/stat line %q", sc.Text())
		}
		busy += n
	}
	return time.Duration(busy) * clockTick, nil
}

// Groups is the CPU time so far of the processes in the process groups
// pgids, user and system, with that of their children that exited and
// were reaped inside the groups. A process that exited and was reaped by
// a parent outside the groups is no longer counted.
func Groups(pgids []int) time.Duration {
	if len(pgids) == 0 {
		return 0
	}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var total int64
	for _, d := range dirs {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		pgid, ticks, ok := parseStat(b)
		if !ok {
			continue
		}
		for _, g := range pgids {
			if g == pgid {
				total += ticks
				break
			}
		}
	}
	return time.Duration(total) * clockTick
}

// parseStat reads a /proc/PID/stat line's process group and its CPU ticks
// (utime + stime + cutime + cstime).
func parseStat(b []byte) (pgid int, ticks int64, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	// After "pid (comm)": state ppid pgrp session tty_nr tpgid flags
	// minflt cminflt majflt cmajflt utime stime cutime cstime ...
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return 0, 0, false
	}
	pgid, err := strconv.Atoi(f[2])
	if err != nil {
		return 0, 0, false
	}
	for _, s := range f[11:15] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		ticks += n
	}
	return pgid, ticks, true
}
