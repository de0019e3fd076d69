package lab

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// bytesPerDevice is the tool's memory per connected paho device, from
// BenchmarkFleet (package mttr): 10 000 devices peaked at 1007 MB of RSS,
// 1 000 at 112–125 MB.
const bytesPerDevice = 100 << 10

// ownFiles and ownPorts are what the tool keeps for itself beside its
// devices: the database, the engine, logs, readiness probes, the verifier.
const (
	ownFiles = 256
	ownPorts = 256
)

// machine is what limits the size of a fleet on this machine; zero where
// it could not be read.
type machine struct {
	files     int   // open files allowed (RLIMIT_NOFILE)
	ports     int   // local ports for connections toward one address
	available int64 // memory available, bytes
}

// thisMachine reads the limits of this machine (Linux; zeros elsewhere).
func thisMachine() machine {
	var m machine
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < 1<<31 {
		m.files = int(rl.Cur)
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			lo, err1 := strconv.Atoi(f[0])
			hi, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && hi >= lo {
				m.ports = hi - lo + 1
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
				if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
					m.available = kb << 10
				}
			}
		}
	}
	return m
}

// fleetFits refuses MTTR_DEVICES beyond what m can run: each device (or
// external client) needs a file descriptor here and a local port toward
// the broker's one address, and each of our own devices memory.
func fleetFits(devices int, external bool, m machine) error {
	refuse := func(most int, why string) error {
		return fmt.Errorf("MTTR_DEVICES=%d: this machine can run at most %d: %s", devices, max(most, 0), why)
	}
	if m.files > 0 && devices > m.files-ownFiles {
		return refuse(m.files-ownFiles, fmt.Sprintf("each device needs an open file, and the limit is %d (ulimit -n)", m.files))
	}
	if m.ports > 0 && devices > m.ports-ownPorts {
		return refuse(m.ports-ownPorts, fmt.Sprintf("each device needs a local port toward the broker, and the range has %d (net.ipv4.ip_local_port_range)", m.ports))
	}
	if !external && m.available > 0 && int64(devices)*bytesPerDevice > m.available*4/5 {
		most := int(m.available * 4 / 5 / bytesPerDevice)
		return refuse(most, fmt.Sprintf("each device takes about %d KiB of memory, and %.1f GiB is available", bytesPerDevice>>10, float64(m.available)/(1<<30)))
	}
	return nil
}
