package mttr

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/mqttprobe"
)

// BrokerLog keeps the broker's own moments from its event log: when it
// began listening, and when it processed client traffic. With them a cycle
// can tell the broker being back from the network path reaching it. Feed
// it every event (Observe); the experiment reads it when a cycle ends.
type BrokerLog struct {
	mu        sync.Mutex
	listening []time.Time
	active    []time.Time          // connect, subscribe and publish events of any client
	connects  []time.Time          // connections it accepted (connect events), probes aside
	sessions  map[string]time.Time // clients connected now, since when (probes aside)
	lastProbe time.Time            // the latest readiness probe's connect; zero before the first
	changed   chan struct{}        // signalled after every event kept; made on first use
}

// Observe records one broker event.
func (b *BrokerLog) Observe(e brokerlog.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e.Kind {
	case brokerlog.Listening:
		b.listening = append(b.listening, e.At)
		clear(b.sessions) // a new broker process: nobody is connected
	case brokerlog.Connect, brokerlog.Subscribe, brokerlog.Publish:
		b.active = append(b.active, e.At)
		if e.Kind == brokerlog.Connect {
			b.connected(e.ClientID, e.At)
		}
	case brokerlog.Disconnect, brokerlog.KeepaliveTimeout:
		delete(b.sessions, e.ClientID)
	default:
		return
	}
	select {
	case b.signal() <- struct{}{}:
	default:
	}
}

// connected records a connect of id; b.mu is held.
func (b *BrokerLog) connected(id string, at time.Time) {
	if strings.HasPrefix(id, mqttprobe.ProbeClientPrefix) {
		if at.After(b.lastProbe) { // probe ids are new every time: not kept
			b.lastProbe = at
		}
		return
	}
	if b.sessions == nil {
		b.sessions = map[string]time.Time{}
	}
	b.sessions[id] = at
	b.connects = append(b.connects, at)
}

// acceptPeak is the most connections the broker accepted within any one
// second from from to to, as its log tells (our readiness probes aside).
func (b *BrokerLog) acceptPeak(from, to time.Time) int {
	if b == nil || from.IsZero() {
		return 0
	}
	b.mu.Lock()
	var in []time.Time
	for _, t := range b.connects {
		if !t.Before(from) && !t.After(to) {
			in = append(in, t)
		}
	}
	b.mu.Unlock()
	slices.SortFunc(in, func(x, y time.Time) int { return x.Compare(y) })
	peak, lo := 0, 0
	for hi := range in { // the window (in[hi] − 1 s, in[hi]]
		for in[hi].Sub(in[lo]) >= time.Second {
			lo++
		}
		peak = max(peak, hi-lo+1)
	}
	return peak
}

// ConnectedSince reports whether client id is connected to the broker as
// far as its log has reached us, and since when.
func (b *BrokerLog) ConnectedSince(id string) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	at, ok := b.sessions[id]
	return at, ok
}

// AwaitConnect waits, at most timeout, until the log shows a connect of
// client id, or of any readiness probe when id is
// mqttprobe.ProbeClientPrefix: then the log has reached the moment that
// client connected. It reports whether it did.
func (b *BrokerLog) AwaitConnect(ctx context.Context, id string, timeout time.Duration) bool {
	return b.await(ctx, timeout, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		_, seen := b.sessions[id]
		return seen || (id == mqttprobe.ProbeClientPrefix && !b.lastProbe.IsZero())
	})
}

// awaitProbe waits, at most timeout, until the log shows a readiness
// probe's connect at or after t: then it has reached t, and holds what the
// broker did before. It reports whether it did.
func (b *BrokerLog) awaitProbe(ctx context.Context, t time.Time, timeout time.Duration) bool {
	return b != nil && b.await(ctx, timeout, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return !b.lastProbe.Before(t)
	})
}

// await waits, at most timeout, until seen (which takes b.mu itself)
// reports true after an event, and reports whether it did.
func (b *BrokerLog) await(ctx context.Context, timeout time.Duration, seen func() bool) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		// The channel first: an event after seen looked still signals it.
		b.mu.Lock()
		ch := b.signal()
		b.mu.Unlock()
		if seen() {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// signal returns the change channel; b.mu is held.
func (b *BrokerLog) signal() chan struct{} {
	if b.changed == nil {
		b.changed = make(chan struct{}, 1)
	}
	return b.changed
}

// awaitBack waits, at most timeout, until the log shows the broker back
// after the fault of m (a listening line, or client traffic from the heal
// on). The log reaches us a little after what it records: a device's
// acknowledgement can arrive before the broker's line for the same message
// has been read.
func (b *BrokerLog) awaitBack(ctx context.Context, m Marks, timeout time.Duration) {
	if b == nil || m.FaultAt.IsZero() {
		return
	}
	b.await(ctx, timeout, func() bool {
		probe := m
		b.mark(&probe)
		return !probe.ListeningAt.IsZero() || !probe.ResumedAt.IsZero()
	})
}

// mark fills m.ListeningAt with the first listening line at or after the
// fault took effect and, when there is none (the broker process was never
// restarted), m.ResumedAt with the first client event it processed from
// the heal on.
func (b *BrokerLog) mark(m *Marks) {
	if b == nil || m.FaultAt.IsZero() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	m.ListeningAt = firstFrom(b.listening, m.FaultAt)
	if m.ListeningAt.IsZero() && !m.healFrom().IsZero() {
		m.ResumedAt = firstFrom(b.active, m.healFrom())
	}
}

// forget drops what happened before t.
func (b *BrokerLog) forget(t time.Time) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.listening = dropBefore(b.listening, t)
	b.active = dropBefore(b.active, t)
	b.connects = dropBefore(b.connects, t)
}

// firstFrom returns the earliest of ts at or after t, or zero.
func firstFrom(ts []time.Time, t time.Time) time.Time {
	var first time.Time
	for _, x := range ts {
		if !x.Before(t) && (first.IsZero() || x.Before(first)) {
			first = x
		}
	}
	return first
}

func dropBefore(ts []time.Time, t time.Time) []time.Time {
	return slices.DeleteFunc(ts, func(x time.Time) bool { return x.Before(t) })
}
