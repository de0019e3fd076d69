package mttr

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
)

func TestBrokerTimeline(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	m := Marks{Start: at(0), Inject: at(10_000), FaultAt: at(10_005), HealedAt: at(17_000), ProbeAt: at(17_200), End: at(18_000)}
	ev := func(ms int, kind string) brokerlog.Event {
		return brokerlog.Event{At: at(ms), Kind: kind, ClientID: "dev", QoS: 1}
	}
	tests := []struct {
		name   string
		events []brokerlog.Event
		check  func(t *testing.T, r rowView)
	}{
		{"stop: disconnect, reconnect, publish", []brokerlog.Event{
			ev(3000, brokerlog.Publish), ev(6000, brokerlog.Publish), ev(9000, brokerlog.Publish),
			ev(10_010, brokerlog.Disconnect), ev(17_500, brokerlog.Connect), ev(17_520, brokerlog.Publish),
			ev(17_900, brokerlog.Publish), ev(18_100, brokerlog.Publish),
		}, func(t *testing.T, r rowView) {
			r.want(t, "lost", 10_010).want(t, "reconnected", 17_500).want(t, "first ack", 17_520).want(t, "last before", 9000).want(t, "ready", 17_200)
			if r.c.Published != 5 || r.c.Acknowledged != 5 {
				t.Errorf("published %d acknowledged %d, want 5 (18 100 is after the end)", r.c.Published, r.c.Acknowledged)
			}
		}},
		{"kill: the broker never said goodbye", []brokerlog.Event{
			ev(9000, brokerlog.Publish), ev(17_100, brokerlog.Connect), ev(17_150, brokerlog.Publish),
		}, func(t *testing.T, r rowView) {
			r.want(t, "lost", 0).want(t, "reconnected", 17_100).want(t, "first ack", 17_150).want(t, "ready", 17_100)
		}},
		{"pause: no reconnect, backlog after heal", []brokerlog.Event{
			ev(9000, brokerlog.Publish), ev(16_990, brokerlog.Publish), ev(17_010, brokerlog.Publish),
		}, func(t *testing.T, r rowView) {
			r.want(t, "lost", 0).want(t, "reconnected", 0).want(t, "first ack", 17_010).want(t, "ready", 17_010)
		}},
		{"keep-alive timeout, never back", []brokerlog.Event{
			ev(9000, brokerlog.Publish), ev(12_000, brokerlog.KeepaliveTimeout),
		}, func(t *testing.T, r rowView) {
			r.want(t, "lost", 12_000).want(t, "first ack", 0).want(t, "ready", 17_200)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := brokerTimeline(3, "dev", tt.events, func([]string) int { return 0 }, m, c2dLog{})
			if c.Cycle != 3 || c.Device != "dev" || c.FaultAt != m.FaultAt.UnixNano() || c.HealedAt != m.HealedAt.UnixNano() {
				t.Errorf("row %+v", c)
			}
			tt.check(t, rowView{c: c, t0: t0})
		})
	}

	// A frozen broker processes what waited for it the moment it thaws,
	// before the call that thawed it returns: that counts from when
	// healing began, so a client that kept publishing recovers at once.
	thawed := m
	thawed.Heal = at(16_980)
	c := brokerTimeline(3, "dev", []brokerlog.Event{ev(9000, brokerlog.Publish), ev(16_990, brokerlog.Publish), ev(17_990, brokerlog.Publish)},
		func([]string) int { return 0 }, thawed, c2dLog{})
	rowView{c: c, t0: t0}.want(t, "first ack", 16_990).want(t, "ready", 16_990).want(t, "reconnected", 0)
	if d, ok := c.Recovery(); !ok || d != 0 {
		t.Errorf("recovery after a thaw = %v %v, want 0", d, ok)
	}
}

// rowView checks a row's times in ms after t0; 0 means NULL.
type rowView struct {
	c  Cycle
	t0 time.Time
}

func (r rowView) want(t *testing.T, name string, ms int) rowView {
	t.Helper()
	got := map[string]int64{"lost": r.c.LostAt, "reconnected": r.c.ReconnectedAt, "first ack": r.c.FirstAckAt,
		"last before": r.c.LastAckBeforeAt, "ready": r.c.ReadyAt}[name]
	want := int64(0)
	if ms != 0 {
		want = r.t0.Add(time.Duration(ms) * time.Millisecond).UnixNano()
	}
	if got != want {
		t.Errorf("%s = %d ms, want %d ms", name, (got-r.t0.UnixNano())/1e6, ms)
	}
	return r
}

var errFake = errors.New("client failed")

func TestWatchRecoveryAndNotes(t *testing.T) {
	failed := false
	w := NewWatch([]string{"a", "a-2"}, func() error {
		if failed {
			return errFake
		}
		return nil
	})
	t0 := time.Now()
	w.Observe(brokerlog.Event{At: t0, Kind: brokerlog.Publish, ClientID: "a", QoS: 1})
	w.Observe(brokerlog.Event{At: t0, Kind: brokerlog.Publish, ClientID: "stranger", QoS: 1})
	if w.Recovered(t0) {
		t.Error("recovered with a-2 silent")
	}
	select {
	case <-w.Changed():
	default:
		t.Error("no change signalled")
	}
	w.Observe(brokerlog.Event{At: t0.Add(time.Millisecond), Kind: brokerlog.Publish, ClientID: "a-2", QoS: 0})
	if !w.Recovered(t0) {
		t.Error("not recovered after both published")
	}
	w.Exited("a-2", "client a-2 exited (exit status 1); restarted")
	rows := w.Rows(1, Marks{Start: t0.Add(-time.Second), Inject: t0.Add(-time.Second), HealedAt: t0.Add(-time.Millisecond), End: t0.Add(time.Second)}, "")
	if len(rows) != 2 || rows[0].Device != "a" || rows[1].Device != "a-2" {
		t.Fatalf("rows %+v", rows)
	}
	if rows[0].Error != "" || rows[0].Published != 1 || rows[0].Acknowledged != 1 {
		t.Errorf("row a %+v", rows[0])
	}
	if !strings.Contains(rows[1].Error, "exited (exit status 1)") || rows[1].Acknowledged != 0 || rows[1].Published != 1 {
		t.Errorf("row a-2 %+v (QoS 0 is not acknowledged)", rows[1])
	}
	if again := w.Rows(2, Marks{HealedAt: t0.Add(time.Hour), End: t0.Add(time.Hour)}, ""); strings.Contains(again[1].Error, "exited") {
		t.Errorf("exit note repeated in the next cycle: %q", again[1].Error)
	}
	w.Forget(t0.Add(time.Hour))
	if w.Recovered(t0.Add(time.Hour)) {
		t.Error("recovered after forgetting everything")
	}
	failed = true
	if w.Failed() == nil {
		t.Error("Failed did not report the supervisor's failure")
	}
}

// TestWatchDeliveredByDigest checks that delivery counts match each message
// the broker received with the verifier's copy, however late that copy
// arrived, and that Settled waits for them.
func TestWatchDeliveredByDigest(t *testing.T) {
	w := NewWatch([]string{"a"}, nil)
	w.verifier = newByTopic(w.notify)
	t0 := time.Now()
	pub := func(ms int, payload string) {
		w.Observe(brokerlog.Event{At: t0.Add(time.Duration(ms) * time.Millisecond), Kind: brokerlog.Publish, ClientID: "a", QoS: 1,
			Digest: brokerlog.Digest([]byte(payload))})
	}
	got := func(ms int, payload string) {
		w.verifier.deliver("devices/a/messages/events/", []byte(payload), t0.Add(time.Duration(ms)*time.Millisecond))
	}
	pub(100, "m1")
	pub(200, "m2")
	pub(990, "m3") // just before the cycle ends; its copy arrives after
	got(101, "m1")
	got(201, "m2")
	if w.Settled(t0, time.Now(), 1, 0) {
		t.Error("settled while m3 has not reached the verifier")
	}
	got(1_005, "m3")
	if !w.Settled(t0, time.Now(), 1, 0) {
		t.Error("not settled after every copy arrived")
	}
	rows := w.Rows(1, Marks{Start: t0, Inject: t0.Add(500 * time.Millisecond), HealedAt: t0.Add(900 * time.Millisecond), End: t0.Add(time.Second)}, "")
	if r := rows[0]; r.Published != 3 || r.Delivered != 3 {
		t.Errorf("published %d delivered %d, want 3 and 3", r.Published, r.Delivered)
	}
}
