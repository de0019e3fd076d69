package mttr

import (
	"fmt"
	"time"
)

// Cycle is one device's timeline in one fault cycle. Times are Unix
// nanoseconds, stamped where the event was observed, and 0 when it did not
// happen. The durations a report shows are derived from them by the methods
// below, and nowhere else: the store persists the times, reports call the
// methods.
type Cycle struct {
	Cycle  int
	Device string

	FaultAt       int64 // the fault took effect
	LostAt        int64 // the device noticed its connection was gone
	HealedAt      int64 // the call that brought the broker back returned
	ListeningAt   int64 // the broker's first "listening" line after the fault (it restarted)
	ResumedAt     int64 // the first client event the broker processed after it resumed (it was never restarted)
	HeldUntilAt   int64 // the network path last held a connection toward the broker (SYN sent, no answer) after it was back
	ReadyAt       int64 // the broker first answered our probe (past a network fault: from the tool's own ports), or this device if earlier
	ReconnectedAt int64 // the device's own CONNACK after the fault
	AttemptAt     int64 // it began the reconnect attempt that got it back; 0 when unknown (an external client)
	// BrokerAddress is, for readdress, the broker's new address after the
	// heal, the only one it had then: a device that reconnected reached it.
	// Empty for the other faults, and when the heal did not happen.
	BrokerAddress string
	// BrokerAcceptPeak is the most connections the broker accepted in any
	// one second from the heal to the cycle's end, from its own log: the
	// cycle's, on each device's row. 0 when none (or no log).
	BrokerAcceptPeak int
	FirstAckAt       int64 // the device's first acknowledged message after the fault
	LastAckBeforeAt  int64 // its last acknowledged message before the fault

	// Downstream: commands (cloud-to-device messages) sent to the device.
	Listens        bool   // the device subscribes to its commands (an external client may not: "no downstream")
	ResubscribedAt int64  // its first SUBSCRIBE to its commands from the heal on, as the broker saw it
	CommandsBackAt int64  // our sender of commands had its connection back after the heal; 0 if it kept it
	FirstC2DAt     int64  // the first command it received from the heal on
	Session        string // after it reconnected, whether the broker had its session: SessionResumed or SessionNew; empty when it did not reconnect
	C2DSent        int    // commands sent to it in the cycle
	C2DReceived    int    // of those, received (once or more)
	C2DLost        int    // of those sent while it could receive them (outside the outage), never received
	C2DDuplicated  int    // extra copies received

	// Interrupted is set when the run was stopped (Ctrl-C, SIGTERM) during
	// this cycle: its timeline is cut short, and it counts in no statistic
	// and no loss.
	Interrupted bool

	// Bed is what the test bed took from the machine in the cycle: the
	// cycle's, on each device's row.
	Bed BedCost

	ReconnectAttempts int
	PubackMedian      time.Duration // median publish-to-PUBACK time of the cycle's acknowledged messages; 0 when none (an external client)
	Published         int
	Acknowledged      int
	Delivered         int
	Lost              int
	Duplicated        int
	Error             string
}

// Session values: whether the broker had the device's session when it
// reconnected (the CONNACK's session-present flag).
const (
	SessionNew     = "new"     // it had none: the device asked for a clean session, or the broker lost it (it restarted)
	SessionResumed = "resumed" // it kept the session, subscriptions included
)

// span is b − a, when both happened.
func span(a, b int64) (time.Duration, bool) {
	if a == 0 || b == 0 {
		return 0, false
	}
	return time.Duration(b - a), true
}

// Recovery is the client's own lag once the broker is back: from ready_at
// to the first acknowledged message. It is the MTTR this tool is about.
func (c Cycle) Recovery() (time.Duration, bool) { return span(c.ReadyAt, c.FirstAckAt) }

// Detection is how long the device took to notice: fault_at to lost_at.
func (c Cycle) Detection() (time.Duration, bool) { return span(c.FaultAt, c.LostAt) }

// Outage is how long the device went without an acknowledged message:
// last_ack_before_at to first_ack_at.
func (c Cycle) Outage() (time.Duration, bool) { return span(c.LastAckBeforeAt, c.FirstAckAt) }

// BackAt is when the broker itself was back: its listening line after a
// restart, or the first client event it processed after it resumed.
func (c Cycle) BackAt() int64 {
	if c.ListeningAt != 0 {
		return c.ListeningAt
	}
	return c.ResumedAt
}

// Path is the test bed's own delay: from the broker being back (BackAt) to
// ready_at, the first answer that got through the devices' network path.
// A stalled path shows here, not in Recovery.
func (c Cycle) Path() (time.Duration, bool) { return span(c.BackAt(), c.ReadyAt) }

// Downstream is how long, once the broker was back, the device took to
// receive a command again: from ready_at, or from commands_back_at when our
// sender of commands was back only later (nothing could be sent before),
// to first_c2d_at. A command that waited in a frozen broker can arrive a
// few milliseconds before the probe's answer: it is then slightly below
// zero. Absent for a device that does not listen.
func (c Cycle) Downstream() (time.Duration, bool) {
	if !c.Listens || c.ReadyAt == 0 {
		return 0, false
	}
	return span(max(c.ReadyAt, c.CommandsBackAt), c.FirstC2DAt)
}

// UpstreamRecovered reports whether the device had a message acknowledged
// after the broker was back.
func (c Cycle) UpstreamRecovered() bool {
	_, ok := c.Recovery()
	return ok
}

// DownstreamRecovered reports whether the device received a command after
// the broker was back; true for a device that does not listen, which has
// no downstream to lose.
func (c Cycle) DownstreamRecovered() bool {
	if !c.Listens {
		return true
	}
	_, ok := c.Downstream()
	return ok
}

// Recovered reports whether both directions were back: the device's
// messages were acknowledged again, and it received commands again.
func (c Cycle) Recovered() bool { return c.UpstreamRecovered() && c.DownstreamRecovered() }

// Deaf reports a device whose messages were acknowledged again while its
// commands did not come back.
func (c Cycle) Deaf() bool { return c.UpstreamRecovered() && !c.DownstreamRecovered() }

// notRecovered says which direction did not come back within end − healed
// ("not recovered within 2m0s"), or nothing when both did.
func (c Cycle) notRecovered(m Marks) string {
	within := m.End.Sub(m.HealedAt).Round(time.Millisecond)
	switch {
	case !c.UpstreamRecovered():
		return fmt.Sprintf("not recovered within %s", within)
	case !c.DownstreamRecovered():
		return fmt.Sprintf("downstream not recovered within %s", within)
	}
	return ""
}

// Counts reports whether the cycle counts in statistics, recovery and loss:
// it was not cut short by an interrupt.
func (c Cycle) Counts() bool { return !c.Interrupted }
