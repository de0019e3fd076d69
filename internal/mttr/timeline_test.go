package mttr

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
)

// ruleClock is the clock of the timeline rules' tests: t0, at(ms) after
// it, and ms(ns) back; and a cycle in which we began injecting at 10 s, the
// fault took effect at 10.005 s, healing began at 17 s and returned at
// 17.05 s, the probe's CONNACK came at 17.2 s, and which ended at 18 s.
func ruleClock() (t0 time.Time, at func(int) time.Time, ms func(int64) int, m Marks) {
	t0 = time.Unix(1_800_000_000, 0)
	at = func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ms = func(ns int64) int {
		if ns == 0 {
			return 0
		}
		return int(time.Duration(ns-t0.UnixNano()) / time.Millisecond)
	}
	m = Marks{Start: at(0), Inject: at(10_000), FaultAt: at(10_005), Heal: at(17_000), HealedAt: at(17_050),
		ProbeAt: at(17_200), End: at(18_000)}
	return t0, at, ms, m
}

// TestTimelineRules has a case for every rule of the README's Timeline
// section; each fails when its rule breaks.
func TestTimelineRules(t *testing.T) {
	_, at, ms, m := ruleClock()
	o := func(kind obsKind, ms int, seq int64) obs { return obs{kind: kind, at: at(ms), seq: seq} }
	none := func([]int64) map[int64]int { return nil }
	tests := []struct {
		name      string
		log       []obs
		delivered func([]int64) map[int64]int
		check     func(t *testing.T, c Cycle)
	}{
		{"lost_at is the first loss at or after Inject", []obs{
			o(obsLost, 5_000, 0), o(obsConnected, 6_000, 0), o(obsLost, 10_020, 0), o(obsLost, 12_000, 0),
		}, none, func(t *testing.T, c Cycle) {
			if ms(c.LostAt) != 10_020 {
				t.Errorf("lost_at %d, want 10020 (not the loss before the fault, not the later one)", ms(c.LostAt))
			}
		}},
		{"reconnected_at is the first CONNACK from the heal on, after a loss", []obs{
			o(obsLost, 10_020, 0), o(obsConnected, 16_000, 0), o(obsConnected, 17_300, 0), o(obsConnected, 17_400, 0),
		}, none, func(t *testing.T, c Cycle) {
			if ms(c.ReconnectedAt) != 17_300 {
				t.Errorf("reconnected_at %d, want 17300", ms(c.ReconnectedAt))
			}
		}},
		{"reconnected_at stays empty when the connection was never lost", []obs{
			o(obsConnected, 17_300, 0),
		}, none, func(t *testing.T, c Cycle) {
			if c.ReconnectedAt != 0 {
				t.Errorf("reconnected_at %d without a loss", ms(c.ReconnectedAt))
			}
		}},
		{"first_ack_at counts from when healing began, even before the heal call returned", []obs{
			o(obsAcked, 9_000, 1), o(obsAcked, 16_999, 2), o(obsAcked, 17_010, 3), o(obsAcked, 17_500, 4),
		}, none, func(t *testing.T, c Cycle) {
			if ms(c.FirstAckAt) != 17_010 {
				t.Errorf("first_ack_at %d, want 17010 (after heal began at 17000, before healed_at 17050)", ms(c.FirstAckAt))
			}
		}},
		{"ready_at is the probe's CONNACK when the device is later", []obs{
			o(obsLost, 10_020, 0), o(obsConnected, 17_300, 0), o(obsAcked, 17_310, 1),
		}, none, func(t *testing.T, c Cycle) {
			if ms(c.ReadyAt) != 17_200 {
				t.Errorf("ready_at %d, want the probe's 17200", ms(c.ReadyAt))
			}
		}},
		{"ready_at is the device's own CONNACK or PUBACK when earlier than the probe", []obs{
			o(obsAcked, 17_100, 1),
		}, none, func(t *testing.T, c Cycle) {
			if ms(c.ReadyAt) != 17_100 {
				t.Errorf("ready_at %d, want the device's 17100", ms(c.ReadyAt))
			}
		}},
		{"last_ack_before_at is the last PUBACK before Inject", []obs{
			o(obsAcked, 3_000, 1), o(obsAcked, 9_000, 2), o(obsAcked, 10_001, 3),
		}, none, func(t *testing.T, c Cycle) {
			if ms(c.LastAckBeforeAt) != 9_000 {
				t.Errorf("last_ack_before_at %d, want 9000", ms(c.LastAckBeforeAt))
			}
		}},
		{"reconnect_attempts counts attempts between the loss and the reconnect; attempt_at is the last", []obs{
			o(obsAttempt, 1_000, 0), o(obsLost, 10_020, 0), o(obsAttempt, 11_000, 0), o(obsAttempt, 13_000, 0),
			o(obsAttempt, 17_250, 0), o(obsConnected, 17_300, 0), o(obsAttempt, 17_900, 0),
		}, none, func(t *testing.T, c Cycle) {
			if c.ReconnectAttempts != 3 || ms(c.AttemptAt) != 17_250 {
				t.Errorf("reconnect_attempts %d attempt_at %d, want 3 17250", c.ReconnectAttempts, ms(c.AttemptAt))
			}
		}},
		{"an attempt reported before the loss it follows counts", []obs{
			o(obsAttempt, 10_030, 0), o(obsLost, 10_020, 0), o(obsConnected, 17_300, 0),
		}, none, func(t *testing.T, c Cycle) {
			if c.ReconnectAttempts != 1 || ms(c.AttemptAt) != 10_030 || ms(c.LostAt) != 10_020 {
				t.Errorf("reconnect_attempts %d attempt_at %d lost_at %d, want 1 10030 10020", c.ReconnectAttempts, ms(c.AttemptAt), ms(c.LostAt))
			}
		}},
		{"no attempt_at without a reconnect", []obs{
			o(obsLost, 10_020, 0), o(obsAttempt, 11_000, 0),
		}, none, func(t *testing.T, c Cycle) {
			if c.AttemptAt != 0 {
				t.Errorf("attempt_at %d, want none", ms(c.AttemptAt))
			}
		}},
		{"messages count in the cycle they were published in", []obs{
			o(obsPublished, -1, 1), o(obsPublished, 1_000, 2), o(obsAcked, 1_001, 2), o(obsPublished, 9_000, 3),
			o(obsPublished, 17_300, 4), o(obsAcked, 17_310, 4), o(obsPublished, 17_990, 5), o(obsPublished, 18_000, 6),
		}, func(seqs []int64) map[int64]int { return map[int64]int{2: 1, 4: 2, 5: 1} }, func(t *testing.T, c Cycle) {
			// 2 acked+delivered; 3 neither (lost); 4 acked, delivered twice; 5 delivered only.
			if c.Published != 4 || c.Acknowledged != 2 || c.Delivered != 3 || c.Duplicated != 1 || c.Lost != 1 {
				t.Errorf("published %d acknowledged %d delivered %d duplicated %d lost %d, want 4 2 3 1 1",
					c.Published, c.Acknowledged, c.Delivered, c.Duplicated, c.Lost)
			}
		}},
		{"puback_median is over the cycle's acknowledged messages, each acked once", []obs{
			o(obsPublished, -5, 1), o(obsAcked, 100, 1), // before the cycle: not counted
			o(obsPublished, 1_000, 2), o(obsAcked, 1_010, 2), o(obsAcked, 1_900, 2), // acked twice: the first counts
			o(obsPublished, 2_000, 3), o(obsAcked, 2_400, 3),
			o(obsPublished, 3_000, 4), o(obsAcked, 3_030, 4),
			o(obsPublished, 4_000, 5), o(obsAcked, 4_500, 5),
			o(obsPublished, 5_000, 6), // never acked
		}, none, func(t *testing.T, c Cycle) {
			// waits 10, 400, 30, 500 ms: the median is 215 ms.
			if c.PubackMedian != 215*time.Millisecond {
				t.Errorf("puback_median %v, want 215ms", c.PubackMedian)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := timeline(2, "dev", tt.log, tt.delivered, m, c2dLog{})
			if c.Cycle != 2 || c.Device != "dev" || ms(c.FaultAt) != 10_005 || ms(c.HealedAt) != 17_050 {
				t.Errorf("shared marks: %+v", c)
			}
			tt.check(t, c)
		})
	}
}

// TestHeldPathRule checks ready_at for a device whose connection the
// network path held: when it reconnected within heldSlack after the path
// let go, ready_at is that moment; otherwise the probe's answer stands.
func TestHeldPathRule(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	m := Marks{Start: at(0), Inject: at(10_000), FaultAt: at(10_005), Heal: at(17_000), HealedAt: at(17_050),
		ListeningAt: at(17_140), ProbeAt: at(17_150), HeldUntil: at(17_700), End: at(18_000)}
	o := func(kind obsKind, ms int) obs { return obs{kind: kind, at: at(ms)} }
	none := func([]int64) map[int64]int { return nil }
	for _, tt := range []struct {
		name        string
		reconnected int
		ready       int
	}{
		{"reconnected right after the path let go: ready then", 17_720, 17_700},
		{"reconnected later than the slack: the probe's answer", 17_900, 17_150},
		{"reconnected before the path let go: the probe's answer", 17_600, 17_150},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := timeline(1, "d", []obs{o(obsLost, 10_010), o(obsConnected, tt.reconnected), o(obsAcked, tt.reconnected+5)}, none, m, c2dLog{})
			if got := int(time.Duration(c.ReadyAt-t0.UnixNano()) / time.Millisecond); got != tt.ready {
				t.Errorf("ready_at %d, want %d", got, tt.ready)
			}
			if c.HeldUntilAt != at(17_700).UnixNano() {
				t.Errorf("held_until_at %d not recorded", c.HeldUntilAt)
			}
			b := brokerTimeline(1, "d", []brokerlog.Event{
				{At: at(tt.reconnected), Kind: brokerlog.Connect, ClientID: "d"},
				{At: at(tt.reconnected + 5), Kind: brokerlog.Publish, ClientID: "d", QoS: 1},
			}, func([]string) int { return 0 }, m, c2dLog{})
			if b.ReadyAt != c.ReadyAt {
				t.Errorf("seen from the broker: ready_at %d, want %d", b.ReadyAt, c.ReadyAt)
			}
		})
	}
	if rec, _ := timeline(1, "d", []obs{o(obsLost, 10_010), o(obsAttempt, 16_900), o(obsConnected, 17_720), o(obsAcked, 17_725)}, none, m, c2dLog{}).Recovery(); rec != 25*time.Millisecond {
		t.Errorf("recovery of a held device = %v, want 25ms: the hold is path, not recovery", rec)
	}
	// A device of ours that began its attempt after the path let go was
	// not the one held: it merely came in then, and keeps its lag.
	late := timeline(1, "d", []obs{o(obsLost, 10_010), o(obsAttempt, 17_705), o(obsConnected, 17_720), o(obsAcked, 17_725)}, none, m, c2dLog{})
	if late.ReadyAt != at(17_150).UnixNano() {
		t.Errorf("ready_at of a device whose attempt began after the hold = %d ms, want the probe's 17150", (late.ReadyAt-t0.UnixNano())/1e6)
	}
}

// TestBrokerMoments checks listening_at and resumed_at: the broker's own
// moments, and the path delay derived from them.
func TestBrokerMoments(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ev := func(ms int, kind string) brokerlog.Event {
		return brokerlog.Event{At: at(ms), Kind: kind, ClientID: "x"}
	}
	base := Marks{Inject: at(10_000), FaultAt: at(10_005), Heal: at(17_000), HealedAt: at(17_050)}
	tests := []struct {
		name                 string
		events               []brokerlog.Event
		listening, resumed   int // ms after t0; 0 = none
		wantPath, haveResume bool
	}{
		{"a restart: the first listening line after the fault", []brokerlog.Event{
			ev(1, brokerlog.Listening), ev(9_000, brokerlog.Publish), ev(17_140, brokerlog.Listening), ev(17_150, brokerlog.Connect),
			ev(30_000, brokerlog.Listening),
		}, 17_140, 0, true, false},
		{"no restart: the first client event from the heal on", []brokerlog.Event{
			ev(1, brokerlog.Listening), ev(12_000, brokerlog.Publish), ev(14_000, brokerlog.KeepaliveTimeout),
			ev(16_000, brokerlog.Disconnect), ev(17_003, brokerlog.Publish), ev(17_004, brokerlog.Connect),
		}, 0, 17_003, true, true},
		{"nothing after the heal: neither", []brokerlog.Event{
			ev(1, brokerlog.Listening), ev(9_000, brokerlog.Publish),
		}, 0, 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b BrokerLog
			for _, e := range tt.events {
				b.Observe(e)
			}
			m := base
			b.mark(&m)
			want := func(ms int) time.Time {
				if ms == 0 {
					return time.Time{}
				}
				return at(ms)
			}
			if !m.ListeningAt.Equal(want(tt.listening)) || !m.ResumedAt.Equal(want(tt.resumed)) {
				t.Errorf("listening %v resumed %v, want %d and %d ms", m.ListeningAt.Sub(t0), m.ResumedAt.Sub(t0), tt.listening, tt.resumed)
			}
			m.ProbeAt = at(17_200)
			c := timeline(1, "d", nil, func([]int64) map[int64]int { return nil }, m, c2dLog{})
			if _, ok := c.Path(); ok != tt.wantPath {
				t.Errorf("path exists %v, want %v", ok, tt.wantPath)
			}
			b.forget(at(40_000))
			m2 := base
			b.mark(&m2)
			if !m2.ListeningAt.IsZero() || !m2.ResumedAt.IsZero() {
				t.Errorf("after forget: %+v", m2)
			}
		})
	}
}

// TestCycleDurations checks each derived duration, and that it is absent
// when either end is missing.
func TestCycleDurations(t *testing.T) {
	c := Cycle{FaultAt: 10e9, LostAt: 10.02e9, LastAckBeforeAt: 9e9, ListeningAt: 17.14e9, ReadyAt: 17.2e9, FirstAckAt: 17.31e9}
	for _, tt := range []struct {
		name string
		f    func(Cycle) (time.Duration, bool)
		want time.Duration
	}{
		{"recovery = first_ack_at − ready_at", Cycle.Recovery, 110 * time.Millisecond},
		{"detection = lost_at − fault_at", Cycle.Detection, 20 * time.Millisecond},
		{"outage = first_ack_at − last_ack_before_at", Cycle.Outage, 8310 * time.Millisecond},
		{"path = ready_at − listening_at", Cycle.Path, 60 * time.Millisecond},
	} {
		if d, ok := tt.f(c); !ok || d != tt.want {
			t.Errorf("%s: %v %v, want %v", tt.name, d, ok, tt.want)
		}
		if _, ok := tt.f(Cycle{}); ok {
			t.Errorf("%s exists for an empty cycle", tt.name)
		}
	}
	resumed := Cycle{ResumedAt: 17.19e9, ReadyAt: 17.2e9}
	if d, ok := resumed.Path(); !ok || d != 10*time.Millisecond {
		t.Errorf("path from resumed_at = %v %v, want 10ms", d, ok)
	}
	if (Cycle{ReadyAt: 1, FirstAckAt: 2}).Recovered() != true || (Cycle{ReadyAt: 1}).Recovered() {
		t.Error("Recovered disagrees with Recovery")
	}
}

// TestAwaitBackWaitsForTheLog checks that the cycle waits for the broker's
// line that arrives after the device's answer, and not for anything else.
func TestAwaitBackWaitsForTheLog(t *testing.T) {
	t0 := time.Now()
	m := Marks{Inject: t0, FaultAt: t0, Heal: t0.Add(time.Millisecond)}
	var b BrokerLog
	b.Observe(brokerlog.Event{At: t0.Add(-time.Second), Kind: brokerlog.Listening}) // the start before the fault
	done := make(chan struct{})
	go func() {
		b.awaitBack(t.Context(), m, time.Minute)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("returned before the broker was back in the log")
	default:
	}
	b.Observe(brokerlog.Event{At: t0.Add(2 * time.Millisecond), Kind: brokerlog.Disconnect}) // not traffic
	b.Observe(brokerlog.Event{At: t0.Add(3 * time.Millisecond), Kind: brokerlog.Publish})
	select {
	case <-done:
	case <-t.Context().Done():
	}
	m2 := m
	b.mark(&m2)
	if !m2.ResumedAt.Equal(t0.Add(3 * time.Millisecond)) {
		t.Errorf("resumed_at %v, want the publish", m2.ResumedAt.Sub(t0))
	}
}

// TestStorm checks the fraction-recovered times of a cycle of 10 devices
// (9 recovered after 100..900 ms, one not) worked out by hand.
func TestStorm(t *testing.T) {
	var s Storm
	for i := range 10 {
		c := Cycle{Cycle: 3, Device: fmt.Sprint(i), ReadyAt: 1e9, BrokerAcceptPeak: 7}
		if i < 9 {
			c.FirstAckAt = c.ReadyAt + int64(i+1)*100e6
		}
		s = append(s, c)
	}
	s = append(s, Cycle{Cycle: 3, Device: "cut", Interrupted: true}) // counts in nothing
	for _, tc := range []struct {
		q    float64
		want time.Duration
		ok   bool
	}{{0.5, 500 * time.Millisecond, true}, {0.9, 900 * time.Millisecond, true}, {0.99, 0, false}, {1, 0, false}, {0.1, 100 * time.Millisecond, true}} {
		if got, ok := s.RecoveredBy(tc.q); got != tc.want || ok != tc.ok {
			t.Errorf("RecoveredBy(%v) = %v, %v; want %v, %v", tc.q, got, ok, tc.want, tc.ok)
		}
	}
	if c := s.Curve(); len(c) != 9 || c[8].Fraction != 0.9 || c[8].After != 900*time.Millisecond {
		t.Errorf("curve %v", c)
	}
	if m, ok := s.Median(); !ok || m != 550*time.Millisecond {
		t.Errorf("median %v, %v; want 550ms", m, ok)
	}
	if m, ok := s[8:].Median(); ok { // 2 counted, 1 recovered: the middle two include the one that did not
		t.Errorf("median of %d devices, one not recovered: %v, want none", s[8:].Devices(), m)
	}
	if s.Devices() != 10 || s.AcceptPeak() != 7 {
		t.Errorf("devices %d, accept peak %d", s.Devices(), s.AcceptPeak())
	}
	if got := Storms(append(slices.Clone(s), Cycle{Cycle: 4})); len(got) != 2 || len(got[0]) != 11 {
		t.Errorf("Storms split %d cycles", len(got))
	}
}
