package mttr

import (
	"slices"
	"sync"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
)

// BrokerLog keeps the broker's own moments from its event log: when it
// began listening, and when it processed client traffic. With them a cycle
// can tell the broker being back from the network path reaching it. Feed
// it every event (Observe); the experiment reads it when a cycle ends.
type BrokerLog struct {
	mu        sync.Mutex
	listening []time.Time
	active    []time.Time // connect, subscribe and publish events of any client
}

// Observe records one broker event.
func (b *BrokerLog) Observe(e brokerlog.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e.Kind {
	case brokerlog.Listening:
		b.listening = append(b.listening, e.At)
	case brokerlog.Connect, brokerlog.Subscribe, brokerlog.Publish:
		b.active = append(b.active, e.At)
	}
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
	if m.ListeningAt.IsZero() && !m.back().IsZero() {
		m.ResumedAt = firstFrom(b.active, m.back())
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
