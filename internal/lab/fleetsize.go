package lab

import (
	"fmt"

	"github.com/mttrlab/mttr/internal/host"
)

// bytesPerDevice is the tool's memory per connected paho device, from
// BenchmarkFleet (package mttr), with commands: 10 000 devices peaked at
// 1209–1379 MiB of RSS, 1 000 at 131–137 MiB, 100 at 27–28 MiB.
const bytesPerDevice = 140 << 10

// ownFiles and ownPorts are what the tool keeps for itself beside its
// devices: the database, the engine, logs, readiness probes, the verifier.
const (
	ownFiles = 256
	ownPorts = 256
)

// fleetFits refuses MTTR_DEVICES beyond what m can run: each device (or
// external client) needs a file descriptor here and a local port toward
// the broker's one address, and each of our own devices memory.
func fleetFits(devices int, external bool, m host.Limits) error {
	refuse := func(most int, why string) error {
		return fmt.Errorf("MTTR_DEVICES=%d: this machine can run at most %d: %s", devices, max(most, 0), why)
	}
	if m.Files > 0 && devices > m.Files-ownFiles {
		return refuse(m.Files-ownFiles, fmt.Sprintf("each device needs an open file, and the limit is %d (ulimit -Hn)", m.Files))
	}
	if m.Ports > 0 && devices > m.Ports-ownPorts {
		return refuse(m.Ports-ownPorts, fmt.Sprintf("each device needs a local port toward the broker, and the range has %d (net.ipv4.ip_local_port_range)", m.Ports))
	}
	if !external && m.Available > 0 && int64(devices)*bytesPerDevice > m.Available*4/5 {
		most := int(m.Available * 4 / 5 / bytesPerDevice)
		return refuse(most, fmt.Sprintf("each device takes about %d KiB of memory, and %.1f GiB is available", bytesPerDevice>>10, float64(m.Available)/(1<<30)))
	}
	return nil
}
