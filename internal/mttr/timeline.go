package mttr

import (
	"slices"
	"time"

	"github.com/mttrlab/mttr/internal/stats"
)

// Marks are the broker-side moments of one cycle, shared by every device.
type Marks struct {
	Start       time.Time // the cycle began (its keep-running phase)
	Inject      time.Time // we began injecting the fault
	FaultAt     time.Time // the fault took effect
	Heal        time.Time // we began healing (for an engine restart: the engine's start)
	HealedAt    time.Time // the heal call returned (or the engine reported the start)
	ListeningAt time.Time // the broker's first listening line after FaultAt; zero if it did not restart
	ResumedAt   time.Time // if it did not restart: the first client event it processed from Heal on
	HeldUntil   time.Time // the path last held a connection toward the broker, among those it held after the broker was back; zero if none
	ProbeAt     time.Time // our readiness probe's first CONNACK after healing; zero if none
	End         time.Time // the cycle ended: everyone recovered, or the timeout
}

// healFrom is the moment from which a device's answers count as recovery: when
// we began healing. A broker that was frozen or cut off can answer before
// the call that healed it returns.
func (m Marks) healFrom() time.Time {
	if !m.Heal.IsZero() {
		return m.Heal
	}
	return m.HealedAt
}

// cycle starts device's row for cycle n with the moments every device shares.
func (m Marks) cycle(n int, device string) Cycle {
	return Cycle{Cycle: n, Device: device, FaultAt: ns(m.FaultAt), HealedAt: ns(m.HealedAt),
		ListeningAt: ns(m.ListeningAt), ResumedAt: ns(m.ResumedAt), HeldUntilAt: ns(m.HeldUntil)}
}

// heldSlack is how soon after the path let go of a connection it held a
// device's reconnect must come for that connection to count as the
// device's own: the rest of the TCP handshake, the TLS handshake and the
// CONNECT, with room for a loaded machine.
const heldSlack = 100 * time.Millisecond

// readyFor is ready_at for a device: the first moment the broker answered
// through the path (probe), or through this device if earlier. A device
// whose reconnect came within heldSlack after the path let go of a
// connection it held (a stalled Docker path) had its own way in open only
// then: its ready_at is that moment, and the stall shows in its path
// delay, not in its recovery. attempt is when the device began the attempt
// that reconnected it, zero when unknown (an external client): a device
// that began it after the path let go was not the one held.
func (m Marks) readyFor(deviceReady, reconnected, attempt time.Time) time.Time {
	ready := earliest(m.ProbeAt, deviceReady)
	h := m.HeldUntil
	if h.IsZero() || reconnected.IsZero() || !ready.Before(h) || reconnected.Before(h) ||
		reconnected.Sub(h) > heldSlack || attempt.After(h) {
		return ready
	}
	return h
}

// timeline builds one device's row for cycle n from its observations and
// what the verifier saw of its messages. Definitions (README "Timeline"):
//
//   - lost_at: the device's first connection loss at or after Inject.
//   - reconnected_at: its first CONNACK from the heal on, if it lost the
//     connection.
//   - first_ack_at: its first PUBACK from the heal on.
//   - ready_at: the first moment from the heal on that the broker
//     demonstrably answered: our probe's CONNACK, or any CONNACK or PUBACK
//     of this device if earlier; or, for a device that reconnected right
//     after the path let go of a connection it held, that moment
//     (Marks.readyFor).
//   - last_ack_before_at: its last PUBACK before Inject.
//   - reconnect_attempts: attempts it started after losing the connection
//     and before it got it back.
//   - attempt_at: when it began the last of them, the one that got it back.
//   - puback_median: the median time from publishing to PUBACK of the
//     cycle's acknowledged messages.
//   - session: the session-present flag of the CONNACK that reconnected it.
//   - first_c2d_at: the first command it received from the heal on; the
//     other downstream fields as downstreamOf defines them.
//
// "From the heal on" is from when we began healing (Marks.healFrom). Messages
// count in the cycle they were published in, [Start, End).
func timeline(n int, device string, log []obs, delivered func([]int64) map[int64]int, m Marks, cmds c2dLog) Cycle {
	// In the order things happened, which is not always the order they
	// were reported in: paho reports a lost connection on a goroutine of
	// its own, and its first reconnect attempt can be reported first.
	log = slices.Clone(log)
	slices.SortStableFunc(log, func(a, b obs) int { return a.at.Compare(b.at) })
	c := m.cycle(n, device)
	from := m.healFrom()
	var lost, reconnected, firstAck, lastAckBefore, deviceReady, attempt time.Time
	attempts := 0
	session := ""
	for _, o := range log {
		switch o.kind {
		case obsLost:
			if lost.IsZero() && !o.at.Before(m.Inject) {
				lost = o.at
			}
		case obsAttempt:
			if !lost.IsZero() && reconnected.IsZero() {
				attempts++
				attempt = o.at
			}
		case obsConnected:
			if !from.IsZero() && !o.at.Before(from) {
				if !lost.IsZero() && reconnected.IsZero() {
					reconnected, session = o.at, sessionName(o.session)
				}
				deviceReady = earliest(deviceReady, o.at)
			}
		case obsAcked:
			if o.at.Before(m.Inject) {
				lastAckBefore = o.at
			}
			if firstAck.IsZero() && !from.IsZero() && !o.at.Before(from) {
				firstAck = o.at
				deviceReady = earliest(deviceReady, o.at)
			}
		}
	}
	ready := m.readyFor(deviceReady, reconnected, attempt)
	c.LostAt, c.ReconnectedAt, c.FirstAckAt = ns(lost), ns(reconnected), ns(firstAck)
	c.LastAckBeforeAt, c.ReadyAt = ns(lastAckBefore), ns(ready)
	c.ReconnectAttempts = attempts
	if !reconnected.IsZero() {
		c.AttemptAt = ns(attempt)
	}
	c.FirstC2DAt, c.Session = ns(firstCommand(cmds, from)), session
	downstreamOf(&c, cmds, m, reconnected)

	var seqs []int64
	published := make(map[int64]time.Time)
	acked := make(map[int64]bool)
	var waits []time.Duration
	for _, o := range log {
		switch {
		case o.kind == obsPublished && !o.at.Before(m.Start) && o.at.Before(m.End):
			seqs = append(seqs, o.seq)
			published[o.seq] = o.at
		case o.kind == obsAcked:
			if p, ok := published[o.seq]; ok && !acked[o.seq] {
				waits = append(waits, o.at.Sub(p))
			}
			acked[o.seq] = true
		}
	}
	if len(waits) > 0 {
		c.PubackMedian = time.Duration(stats.Summarize(stats.Millis(waits)).Median * float64(time.Millisecond))
	}
	seen := delivered(seqs)
	for _, s := range seqs {
		c.Published++
		if acked[s] {
			c.Acknowledged++
		}
		if k := seen[s]; k > 0 {
			c.Delivered++
			c.Duplicated += k - 1
		} else if !acked[s] {
			c.Lost++
		}
	}
	return c
}

func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// earliest returns the earlier of two times, ignoring zero ones.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}
