package mttr

import (
	"context"
	"fmt"
	"time"
)

// BedCost is what the test bed itself took from the machine over one
// cycle's window, from the fault's injection to the cycle's end: the
// cycle's, on each device's row. CPU times are user + system.
type BedCost struct {
	Window  time.Duration // the window's wall time; 0 when not measured
	Tool    time.Duration // this tool's process; with our own devices, theirs too (they run in it)
	Broker  time.Duration // the broker's container or process; -1 when not measured (an engine elsewhere)
	Clients time.Duration // external clients' process groups; 0 without any
	Host    time.Duration // every CPU of the host, busy in any process
	Cores   int           // the host's CPUs
	// Late is how late, at worst, the tool woke from a timer in the window
	// (its lateness probe): the resolution of the cycle's timestamps.
	Late time.Duration
}

// BedLimits say when a cycle's measurement is bound by the test bed rather
// than by the client: the machine had no capacity to spare, or the tool
// could not take its timestamps on time.
type BedLimits struct {
	HostBusy float64       // share of all CPUs busy over the window, 0..1
	Late     time.Duration // worst lateness of the tool's probe
}

// DefaultBedLimits: 90 % of every CPU busy (the point where load
// generators such as Locust warn of their own saturation), or timestamps
// 20 ms late (a fifth of the 100 ms that separates a quick reconnect from a
// slow one in the shortest recoveries measured here).
var DefaultBedLimits = BedLimits{HostBusy: 0.9, Late: 20 * time.Millisecond}

// Measured reports whether the window was measured at all.
func (b BedCost) Measured() bool { return b.Window > 0 }

// Share is cpu's share of one core over the window.
func (b BedCost) Share(cpu time.Duration) float64 {
	if b.Window <= 0 {
		return 0
	}
	return float64(cpu) / float64(b.Window)
}

// HostBusy is the host's busy share of all its CPUs over the window, 0..1.
func (b BedCost) HostBusy() float64 {
	if b.Cores <= 0 {
		return 0
	}
	return b.Share(b.Host) / float64(b.Cores)
}

// Bound returns why the cycle was bound by the bed under lim, empty when it
// was not (or was not measured).
func (b BedCost) Bound(lim BedLimits) []string {
	if !b.Measured() {
		return nil
	}
	var why []string
	if busy := b.HostBusy(); busy >= lim.HostBusy {
		why = append(why, fmt.Sprintf("host %.0f %% busy (limit %.0f %%)", 100*busy, 100*lim.HostBusy))
	}
	if b.Late >= lim.Late {
		why = append(why, fmt.Sprintf("timestamps up to %.0f ms late (limit %.0f ms)", msOf(b.Late), msOf(lim.Late)))
	}
	return why
}

// Add sums two windows' costs (for a run's total).
func (b BedCost) Add(o BedCost) BedCost {
	broker := b.Broker + o.Broker
	if b.Broker < 0 || o.Broker < 0 {
		broker = -1
	}
	return BedCost{
		Window: b.Window + o.Window, Tool: b.Tool + o.Tool, Broker: broker, Clients: b.Clients + o.Clients,
		Host: b.Host + o.Host, Cores: max(b.Cores, o.Cores), Late: max(b.Late, o.Late),
	}
}

// String is the cost as one line: "tool 0.4 % of a core, broker 1.1 %,
// clients 3 %, host 6 % of 2 cores; timestamps within 2 ms".
func (b BedCost) String() string {
	if !b.Measured() {
		return "not measured"
	}
	s := fmt.Sprintf("tool %.1f %% of a core", 100*b.Share(b.Tool))
	if b.Broker >= 0 {
		s += fmt.Sprintf(", broker %.1f %%", 100*b.Share(b.Broker))
	}
	if b.Clients > 0 {
		s += fmt.Sprintf(", clients %.1f %%", 100*b.Share(b.Clients))
	}
	return s + fmt.Sprintf(", host %.0f %% of %d cores; timestamps within %.0f ms",
		100*b.HostBusy(), b.Cores, max(msOf(b.Late), 1))
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BedMeter measures the test bed's cost: Begin opens a window, and the
// function it returns closes it.
type BedMeter interface {
	Begin(ctx context.Context) (end func(ctx context.Context) BedCost)
}
