package mttr

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/device"
	"github.com/mttrlab/mttr/internal/mqtttest"
)

// TestDownstreamRules has a case for every downstream rule of the README's
// Timeline section; each fails when its rule breaks.
func TestDownstreamRules(t *testing.T) {
	_, at, ms, m := ruleClock()
	o := func(kind obsKind, ms int) obs { return obs{kind: kind, at: at(ms)} }
	// A device that lost its connection, reconnected at 17.3 s and had its
	// first PUBACK at 17.31 s.
	back := []obs{o(obsLost, 10_010), o(obsConnected, 17_300), o(obsAcked, 17_310)}
	sent := func(msAt ...int) []sentCmd {
		var out []sentCmd
		for i, x := range msAt {
			out = append(out, sentCmd{seq: int64(i + 1), at: at(x)})
		}
		return out
	}
	got := func(seqAt ...int) []receipt { // pairs: seq, ms
		var out []receipt
		for i := 0; i+1 < len(seqAt); i += 2 {
			out = append(out, receipt{seq: int64(seqAt[i]), at: at(seqAt[i+1])})
		}
		return out
	}
	tests := []struct {
		name  string
		log   []obs
		cmds  c2dLog
		check func(t *testing.T, c Cycle)
	}{
		{"first_c2d_at is the first command received from the heal on", back, c2dLog{listens: true,
			sent: sent(5_000, 16_000, 17_320), received: got(1, 5_002, 3, 17_330)}, func(t *testing.T, c Cycle) {
			if ms(c.FirstC2DAt) != 17_330 {
				t.Errorf("first_c2d_at %d, want 17330", ms(c.FirstC2DAt))
			}
			if d, ok := c.Downstream(); !ok || d != 130*time.Millisecond {
				t.Errorf("downstream %v %v, want first_c2d_at − ready_at = 130ms", d, ok)
			}
		}},
		{"a command that waited in a frozen broker can arrive before the probe's answer: downstream below zero, ready_at unmoved", []obs{o(obsAcked, 17_300)}, c2dLog{listens: true,
			sent: sent(16_000), received: got(1, 17_020)}, func(t *testing.T, c Cycle) {
			if ms(c.ReadyAt) != 17_200 {
				t.Errorf("ready_at %d, want the probe's 17200: a command does not move the upstream's reference", ms(c.ReadyAt))
			}
			if d, ok := c.Downstream(); !ok || d != -180*time.Millisecond {
				t.Errorf("downstream %v %v, want -180ms", d, ok)
			}
		}},
		{"downstream counts from our sender's return when that came after ready_at", back, c2dLog{listens: true,
			sent: sent(17_260), received: got(1, 17_330), senderBack: []time.Time{at(1_000), at(17_250)}}, func(t *testing.T, c Cycle) {
			if ms(c.CommandsBackAt) != 17_250 {
				t.Errorf("commands_back_at %d, want 17250", ms(c.CommandsBackAt))
			}
			if d, ok := c.Downstream(); !ok || d != 80*time.Millisecond {
				t.Errorf("downstream %v %v, want first_c2d_at − commands_back_at = 80ms", d, ok)
			}
		}},
		{"session: our device's own CONNACK flag, when it reconnected", []obs{o(obsLost, 10_010), {kind: obsConnected, at: at(17_300), session: true}, o(obsAcked, 17_310)},
			c2dLog{listens: true, connacks: []sessionAt{{at(17_300), false}}}, func(t *testing.T, c Cycle) {
				if c.Session != SessionResumed {
					t.Errorf("session %q, want %q from the device's CONNACK (the broker's line says otherwise, and is not ours to read)", c.Session, SessionResumed)
				}
			}},
		{"with the session resumed, commands sent in the outage are queued: lost if never received", []obs{o(obsLost, 10_010), {kind: obsConnected, at: at(17_300), session: true}, o(obsAcked, 17_310)},
			c2dLog{listens: true, sent: sent(2_000, 12_000, 17_320), received: got(1, 2_010, 3, 17_330)}, func(t *testing.T, c Cycle) {
				if c.C2DLost != 1 {
					t.Errorf("lost %d, want 1: the one at 12000 should have been queued", c.C2DLost)
				}
			}},
		{"resubscribed_at is the first SUBSCRIBE from the heal on", back, c2dLog{listens: true,
			subscribes: []time.Time{at(1_000), at(16_990), at(17_290), at(17_400)}}, func(t *testing.T, c Cycle) {
			if ms(c.ResubscribedAt) != 17_290 {
				t.Errorf("resubscribed_at %d, want 17290 (before its publishing connection was back, on one of its own)", ms(c.ResubscribedAt))
			}
		}},
		{"no session without a reconnect", []obs{o(obsAcked, 17_300)}, c2dLog{listens: true,
			connacks: []sessionAt{{at(17_305), true}}}, func(t *testing.T, c Cycle) {
			if c.Session != "" {
				t.Errorf("session %q for a device that kept its connection", c.Session)
			}
		}},

		{"counts: sent in the cycle; received; duplicated; lost only outside the outage", back, c2dLog{listens: true,
			// 1 before the cycle; 2, 3 before the fault (3 lost); 4, 5 in
			// the outage (dropped, not lost); 6 the first back, twice; 7
			// after it, lost; 8 after the cycle.
			sent:     sent(-100, 2_000, 9_000, 12_000, 17_100, 17_320, 17_600, 18_100),
			received: got(2, 2_010, 6, 17_330, 6, 17_331)}, func(t *testing.T, c Cycle) {
			if c.C2DSent != 6 || c.C2DReceived != 2 || c.C2DDuplicated != 1 || c.C2DLost != 2 {
				t.Errorf("sent %d received %d duplicated %d lost %d, want 6 2 1 2", c.C2DSent, c.C2DReceived, c.C2DDuplicated, c.C2DLost)
			}
		}},
		{"what is sent to a device that has not listened since an earlier cycle is not lost", back, c2dLog{listens: true,
			sent: sent(2_000, 9_000, 17_320)}, func(t *testing.T, c Cycle) {
			if c.C2DSent != 3 || c.C2DLost != 0 {
				t.Errorf("sent %d lost %d, want 3 0", c.C2DSent, c.C2DLost)
			}
		}},
		{"sent while the fault is being injected is not lost", back, c2dLog{listens: true,
			sent: sent(2_000, 10_001, 17_320), received: got(1, 2_010, 3, 17_330)}, func(t *testing.T, c Cycle) {
			if c.C2DLost != 0 {
				t.Errorf("lost %d, want 0: the one at 10001 went with the broker", c.C2DLost)
			}
		}},
		{"deaf: upstream back, downstream not", back, c2dLog{listens: true, sent: sent(17_320, 17_600)}, func(t *testing.T, c Cycle) {
			if !c.UpstreamRecovered() || c.DownstreamRecovered() || c.Recovered() {
				t.Errorf("upstream %v downstream %v recovered %v, want true false false", c.UpstreamRecovered(), c.DownstreamRecovered(), c.Recovered())
			}
			if c.C2DLost != 0 {
				t.Errorf("lost %d: what the broker dropped while it had no subscription is not lost", c.C2DLost)
			}
			if n := c.notRecovered(m); !strings.HasPrefix(n, "downstream not recovered within 950ms") {
				t.Errorf("note %q", n)
			}
		}},
		{"a device that does not listen has no downstream and recovers on its upstream", back, c2dLog{sent: sent(17_320)}, func(t *testing.T, c Cycle) {
			if _, ok := c.Downstream(); ok || !c.Recovered() || c.notRecovered(m) != "" {
				t.Errorf("downstream %v, recovered %v, note %q", ok, c.Recovered(), c.notRecovered(m))
			}
		}},
		{"upstream not back: not recovered, whatever came down", []obs{o(obsLost, 10_010)}, c2dLog{listens: true,
			sent: sent(17_320), received: got(1, 17_330)}, func(t *testing.T, c Cycle) {
			if c.Recovered() || !strings.HasPrefix(c.notRecovered(m), "not recovered within") {
				t.Errorf("recovered %v, note %q", c.Recovered(), c.notRecovered(m))
			}
		}},
	}
	none := func([]int64) map[int64]int { return nil }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, timeline(2, "dev", tt.log, none, m, tt.cmds))
		})
	}

	// Seen from the broker: the same rules with a client's events and its
	// acknowledgements of commands.
	ev := func(ms int, kind string) brokerlog.Event {
		return brokerlog.Event{At: at(ms), Kind: kind, ClientID: "dev", QoS: 1}
	}
	// Seen from the broker, the session is its first CONNACK from the heal
	// on (the one at 1 s is an earlier connect).
	c := brokerTimeline(2, "dev", []brokerlog.Event{ev(10_010, brokerlog.Disconnect), ev(17_300, brokerlog.Connect), ev(17_310, brokerlog.Publish)},
		func([]string) int { return 0 }, m, c2dLog{listens: true, sent: sent(17_320), received: got(1, 17_330),
			subscribes: []time.Time{at(17_305)}, connacks: []sessionAt{{at(1_000), true}, {at(17_300), false}}})
	if ms(c.FirstC2DAt) != 17_330 || ms(c.ResubscribedAt) != 17_305 || c.Session != SessionNew || !c.Recovered() {
		t.Errorf("seen from the broker: first_c2d_at %d resubscribed_at %d session %q recovered %v", ms(c.FirstC2DAt), ms(c.ResubscribedAt), c.Session, c.Recovered())
	}
	if c := brokerTimeline(2, "dev", []brokerlog.Event{ev(10_010, brokerlog.Disconnect), ev(17_300, brokerlog.Connect), ev(17_310, brokerlog.Publish)},
		func([]string) int { return 0 }, m, c2dLog{listens: true, connacks: []sessionAt{{at(17_300), true}}}); c.Session != SessionResumed {
		t.Errorf("seen from the broker: session %q, want %q", c.Session, SessionResumed)
	}
}

// TestTopicMatch checks MQTT topic filters against a command topic.
func TestTopicMatch(t *testing.T) {
	const topic = "devices/d/messages/devicebound/"
	for f, want := range map[string]bool{
		"devices/d/messages/devicebound/#": true, "devices/+/messages/devicebound/#": true, "#": true,
		"devices/d/messages/devicebound/": true, "devices/d/messages/devicebound/+": true,
		"devices/d/messages/devicebound": false, "devices/e/messages/devicebound/#": false, "devices/d/messages/events/": false,
	} {
		if topicMatch(f, topic) != want {
			t.Errorf("topicMatch(%q) = %v, want %v", f, !want, want)
		}
	}
}

// TestRunDownstream runs stop cycles against an in-process broker that
// forgets sessions when it restarts, with devices that resubscribe in
// OnConnect and with devices that do not. Commands go every 10 s, so only
// the heal and the devices' own events can bring them in time: the first
// devices get their commands back in every cycle within their upstream
// recovery plus 100 ms, and lose none and get none twice; the second are
// recorded as deaf, upstream back and downstream not.
func TestRunDownstream(t *testing.T) {
	for _, resubscribe := range []bool{true, false} {
		t.Run(fmt.Sprintf("resubscribe=%v", resubscribe), func(t *testing.T) {
			t.Parallel()
			b := mqtttest.Start(t, "localhost")
			devs, ver := configs(b.Addr, b.Client, 2, fastTimings)
			for i := range devs {
				devs[i].Resubscribe = resubscribe
			}
			cloud := ver
			cloud.Identity.DeviceID = CloudID("dev")
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			fleet, err := Connect(ctx, FleetSpec{Devices: devs, Verifier: ver, Interval: 100 * time.Millisecond, Cloud: cloud, CommandInterval: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(fleet.Close)
			var got collected
			// A deaf device's commands never arrive: each cycle waits
			// RecoveryTimeout, then settles for SettleTimeout, in vain. A
			// device that resubscribes has its commands within 100 ms of
			// its upstream, which is back within milliseconds here: 1 s and
			// 500 ms are room enough.
			plan := Plan{Cycles: 3, KeepRunning: 300 * time.Millisecond, KeepDead: 200 * time.Millisecond, RecoveryTimeout: time.Second,
				SettleTimeout: 500 * time.Millisecond, QoS: 1}
			f := &stopFault{b: b, addr: b.Addr, tls: b.Client}
			sum, err := Experiment{Plan: plan, Fault: f, Devices: fleet, Sink: got.sink}.Run(runCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(got.rows) != 6 {
				t.Fatalf("%d rows, want 6", len(got.rows))
			}
			for _, r := range got.rows {
				if !r.Listens || !r.UpstreamRecovered() {
					t.Errorf("cycle %d %s: listens %v, upstream back %v", r.Cycle, r.Device, r.Listens, r.UpstreamRecovered())
				}
				if !resubscribe {
					if r.DownstreamRecovered() || !strings.HasPrefix(r.Error, "downstream not recovered within") {
						t.Errorf("cycle %d %s: downstream back without resubscribing: %+v", r.Cycle, r.Device, r)
					}
					continue
				}
				down, ok := r.Downstream()
				up, _ := r.Recovery()
				if !ok || down > up+100*time.Millisecond || r.C2DLost != 0 || r.C2DDuplicated != 0 || r.Error != "" {
					t.Errorf("cycle %d %s: downstream %v %v (upstream %v), lost %d, duplicated %d, error %q", r.Cycle, r.Device, down, ok, up, r.C2DLost, r.C2DDuplicated, r.Error)
				}
				// The broker restarted, so the sender came back too; from its
				// CONNACK on, no command can have arrived before it was back.
				if r.CommandsBackAt == 0 || down < 0 {
					t.Errorf("cycle %d %s: sender back at %d, downstream %v; want back after the heal and a downstream ≥ 0", r.Cycle, r.Device, r.CommandsBackAt, down)
				}
			}
			if want := map[bool]int{true: 0, false: 6}[resubscribe]; sum.NotRecovered != want || sum.Deaf != want {
				t.Errorf("summary: not recovered %d, deaf %d; want %d", sum.NotRecovered, sum.Deaf, want)
			}
		})
	}
}

// TestCommandsObserve follows the broker's log. Seen from the broker, a
// SUBSCRIBE with QoS 1 counts for the devices whose command topic it
// covers, whichever client made it, and an acknowledgement of a command is
// its receipt (one that matches nothing sent is counted); a CONNACK is the
// device's own session. Our own devices' receipts come from the devices
// alone: the broker's acknowledgement of the same command is not a second.
func TestCommandsObserve(t *testing.T) {
	mk := func(seenFromBroker bool) *Commands {
		c := &Commands{spec: CommandsSpec{SeenFromBroker: seenFromBroker}, devs: map[string]*downstream{}}
		for _, id := range []string{"a", "b"} {
			c.ids = append(c.ids, id)
			c.devs[id] = &downstream{topic: "devices/" + id + "/messages/devicebound/", listens: !seenFromBroker,
				digests: map[string]int64{"d-" + id: 7}}
		}
		return c
	}
	t0 := time.Unix(1_800_000_000, 0)
	sub := func(client string, qos int, filters ...string) brokerlog.Event {
		e := brokerlog.Event{At: t0, Kind: brokerlog.Subscribe, ClientID: client}
		for _, f := range filters {
			e.Subscriptions = append(e.Subscriptions, brokerlog.Subscription{Topic: f, QoS: qos})
		}
		return e
	}
	c := mk(true)
	for _, e := range []brokerlog.Event{
		sub("a-commands", 1, "devices/a/messages/devicebound/#", "$iothub/twin/res/#"),
		sub("x", 1, "devices/+/messages/events/"),
		sub("b", 0, "devices/b/messages/devicebound/#"),
		sub("b", 128, "devices/b/messages/devicebound/#"),
		{At: t0, Kind: brokerlog.Connect, ClientID: "a"},
		{At: t0.Add(2 * time.Millisecond), Kind: brokerlog.Connack, ClientID: "a", SessionPresent: true},
		{At: t0.Add(3 * time.Millisecond), Kind: brokerlog.Ack, ClientID: "a-commands", Topic: "devices/a/messages/devicebound/", Digest: "d-a"},
		{At: t0.Add(4 * time.Millisecond), Kind: brokerlog.Ack, ClientID: "a", Topic: "devices/a/messages/devicebound/", Digest: "unknown"},
		{At: t0.Add(5 * time.Millisecond), Kind: brokerlog.Ack, ClientID: "b", Topic: "devices/b/messages/events/", Digest: "d-b"},
	} {
		c.Observe(e)
	}
	a, b := c.log("a"), c.log("b")
	if !a.listens || len(a.subscribes) != 1 || len(a.connacks) != 1 || !a.connacks[0].present || len(a.received) != 1 || a.received[0].seq != 7 || a.unmatched != 1 {
		t.Errorf("device a: %+v", a)
	}
	if b.listens || len(b.subscribes) != 0 || len(b.received) != 0 {
		t.Errorf("device b: %+v (QoS 0 and refused subscriptions, a telemetry subscription and an ack of another topic are not its commands)", b)
	}
	if !c.devs["a"].kept {
		t.Error("seen from the broker, a CONNACK with the session present does not say the broker kept a's session")
	}
	c.Observe(sub("gw", 1, "devices/+/messages/devicebound/#"))
	if !c.log("b").listens {
		t.Error("a wildcard subscription to every device's commands does not count for b")
	}

	ours := mk(false)
	ours.Received("a", []byte(`{"deviceId":"a","seq":7,"sentAt":1}`), t0)
	ours.Observe(brokerlog.Event{At: t0.Add(time.Millisecond), Kind: brokerlog.Ack, ClientID: "a", Topic: "devices/a/messages/devicebound/", Digest: "d-a"})
	if got := ours.log("a").received; len(got) != 1 || !got[0].at.Equal(t0) {
		t.Errorf("our device's receipts %+v, want its own one only", got)
	}
	ours.connected("a", false)
	ours.Observe(brokerlog.Event{At: t0, Kind: brokerlog.Connack, ClientID: "a", SessionPresent: true})
	if ours.devs["a"].kept {
		t.Error("the broker's CONNACK line overrode our device's own session flag")
	}
}

// TestCommandsCadence follows the sender's schedule on a clock of its own:
// the usual interval; after a heal (Nudge), one at once and then the usual
// interval while the device is not seen back; its reconnect or
// subscription (poke) sends at once and then after 20 ms, 40 ms, ... up to
// 200 ms; a receipt goes back to the usual interval.
func TestCommandsCadence(t *testing.T) {
	c := &Commands{spec: CommandsSpec{Interval: time.Second}, devs: map[string]*downstream{}, ids: []string{"a"}}
	t0 := time.Unix(1_800_000_000, 0)
	d := &downstream{topic: "devices/a/messages/devicebound/", listens: true, next: t0}
	c.devs["a"] = d
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// schedule checks that commands leave at exactly the times in want
	// (ms) within [from, to].
	schedule := func(from, to int, want ...int) {
		t.Helper()
		for ms := from; ms <= to; ms++ {
			got := len(c.due(at(ms)))
			if expect := map[bool]int{true: 1, false: 0}[slices.Contains(want, ms)]; got != expect {
				t.Fatalf("at %d ms: %d commands, want %d (commands at %v)", ms, got, expect, want)
			}
		}
	}
	schedule(0, 1499, 0, 1000)
	// A heal at 1500 ms, the device still in its backoff: one command at
	// once, then the usual cadence.
	c.Nudge()
	d.next = at(1500) // Nudge used the wall clock; this test's clock is t0's
	schedule(1500, 2249, 1500)
	// It reconnects at 2250 ms: at once, then 20, 40, 80, 160, 200, 200 ms
	// apart.
	c.poke("a")
	d.next = at(2250)
	schedule(2250, 2950, 2250, 2270, 2310, 2390, 2550, 2750, 2950)
	// It subscribes again at 2960 ms: at once, and the fast cadence from
	// the start.
	c.poke("a")
	d.next = at(2960)
	schedule(2960, 2980, 2960, 2980)
	c.receipt("a", d.seq, at(2985))
	if d.pending || d.seen || !d.next.Equal(at(3985)) {
		t.Errorf("after a receipt: pending %v, fast %v, next at %v; want the usual cadence, at 3985 ms", d.pending, d.seen, d.next.Sub(t0))
	}
}

// TestCommandsSettle: a cycle's row counts the commands sent before its
// end, so a cycle settles only once those on their way to a device that
// listens again have arrived: one handed over whose PUBACK has not been
// read yet, and one acknowledged and not yet received, also when its
// PUBACK was read before the device's first receipt since the heal was
// recorded. One sent before that receipt to a device with a new session
// is not waited for (the broker had no subscription for it then); to a
// device whose session the broker kept, it is (the broker queued it). One
// whose PUBACK will not come does not count as sent.
func TestCommandsSettle(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	cutoff := at(100)
	var notified int
	setup := func() (*Commands, *downstream) {
		c := &Commands{spec: CommandsSpec{Interval: time.Hour, Notify: func() { notified++ }}, devs: map[string]*downstream{}, ids: []string{"a"}}
		d := &downstream{topic: "devices/a/messages/devicebound/", listens: true}
		c.devs["a"] = d
		return c, d
	}
	settled := func(c *Commands, want bool, when string) {
		t.Helper()
		if got := c.Settled(cutoff); got != want {
			d := c.devs["a"]
			t.Fatalf("%s: settled %v, want %v (handed %v, waiting %v)", when, got, want, d.handed, d.waiting)
		}
	}
	cmd := func(seq int64, ms int) outgoing {
		return outgoing{id: "a", topic: "devices/a/messages/devicebound/", seq: seq, payload: []byte{byte(seq)}, at: at(ms)}
	}

	t.Run("new session", func(t *testing.T) {
		c, _ := setup()
		c.connected("a", false)
		c.Nudge() // a heal
		early, first, late, later := cmd(1, 0), cmd(2, 1), cmd(3, 3), cmd(4, 4)
		for _, o := range []outgoing{early, first, late} {
			c.handOver(o, nil)
		}
		settled(c, true, "nothing received since the heal")
		c.acked(first, true)
		c.acked(late, true) // read before the receipt below is recorded
		c.receipt("a", 2, at(2))
		c.acked(early, true) // read after it
		settled(c, false, "one sent after the first receipt, acknowledged, not received yet")
		c.receipt("a", 3, at(5))
		settled(c, true, "all received but the one sent before the first receipt, to a new session")
		c.handOver(later, nil)
		settled(c, false, "one handed over after the first receipt, PUBACK not read yet")
		before := notified
		c.acked(later, true)
		if notified == before {
			t.Error("a PUBACK read does not wake a cycle settling")
		}
		settled(c, false, "acknowledged, not received yet")
		c.receipt("a", 4, at(6))
		settled(c, true, "all received but the one sent before the first receipt, to a new session")

		c.handOver(cmd(5, 7), nil)
		c.acked(cmd(5, 7), false)
		settled(c, true, "a command whose PUBACK will not come")
		if got := len(c.log("a").sent); got != 4 {
			t.Errorf("%d commands count as sent, want 4: one without a PUBACK does not", got)
		}
	})
	t.Run("session kept", func(t *testing.T) {
		c, _ := setup()
		c.connected("a", true)
		c.Nudge()
		// Two sent in the outage, queued by the broker; the PUBACK of one
		// is read before the first receipt is recorded, of the other after.
		queued, queued2, first := cmd(1, 0), cmd(2, 0), cmd(3, 1)
		c.handOver(queued, nil)
		c.handOver(first, nil)
		c.acked(queued, true)
		c.acked(first, true)
		c.receipt("a", 3, at(2))
		settled(c, false, "one queued by the broker, acknowledged before the first receipt, not received yet")
		c.receipt("a", 1, at(3))
		settled(c, true, "received")
		c.handOver(queued2, nil)
		c.acked(queued2, true)
		settled(c, false, "one queued by the broker, acknowledged after the first receipt, not received yet")
		c.receipt("a", 2, at(4))
		settled(c, true, "received")
	})
}

// TestCommandsWaitingBounded: a command sent an interval ago or more is
// never waited for again, so it is not kept either: a device that does not
// listen yet (a fleet still connecting) keeps only the newest.
func TestCommandsWaitingBounded(t *testing.T) {
	c := &Commands{spec: CommandsSpec{Interval: time.Second}, devs: map[string]*downstream{}, ids: []string{"a"}}
	d := &downstream{topic: "devices/a/messages/devicebound/", listens: true}
	c.devs["a"] = d
	now := time.Now()
	for seq := range int64(5) {
		c.acked(outgoing{id: "a", seq: seq + 1, at: now.Add(time.Duration(seq-4) * time.Second)}, true)
	}
	if len(d.waiting) != 1 || d.waiting[0].seq != 5 || len(c.log("a").sent) != 5 {
		t.Errorf("waiting for %v, %d sent; want seq 5 only, 5", d.waiting, len(c.log("a").sent))
	}
	if c.Settled(now.Add(time.Millisecond)) {
		t.Error("settled while the newest, sent less than an interval ago, is not received")
	}
}

// TestCommandsSentOnce: a command whose PUBACK the broker sent but the
// sender never read (its connection was cut) is not sent again when the
// sender reconnects; the device may have it already, and a second copy
// would count as the device's duplicate. A subscriber that takes its
// messages in order stands for the device: once it has the command sent
// after the reconnect, it has every copy sent before.
func TestCommandsSentOnce(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	p := mqtttest.NewProxy(t, b.Addr)
	devs, ver := configs(b.Addr, b.Client, 1, fastTimings)
	id := devs[0].Identity

	copies := map[int64]int{}
	var mu sync.Mutex
	arrived := make(chan int64, 16)
	opts := paho.NewClientOptions().AddBroker("tls://" + b.Addr).SetTLSConfig(b.Client).
		SetClientID("observer").SetCleanSession(true).SetOrderMatters(true).SetAutoReconnect(false)
	obs := paho.NewClient(opts)
	if tok := obs.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("observer: connect: %v", tok.Error())
	}
	t.Cleanup(func() { obs.Disconnect(0) })
	if tok := obs.Subscribe(id.CommandTopic()+"#", 1, func(_ paho.Client, m paho.Message) {
		var cmd device.Telemetry
		if json.Unmarshal(m.Payload(), &cmd) != nil {
			return
		}
		mu.Lock()
		copies[cmd.Seq]++
		mu.Unlock()
		arrived <- cmd.Seq
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("observer: subscribe: %v", tok.Error())
	}
	await := func(seq int64) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case got := <-arrived:
				if got == seq {
					return
				}
			case <-deadline:
				t.Fatalf("command %d never arrived", seq)
			}
		}
	}

	cloud := ver
	cloud.Identity.DeviceID = CloudID("dev")
	cloud.BrokerAddr = p.Addr
	c, err := StartCommands(t.Context(), CommandsSpec{Sender: cloud, Devices: []device.Identity{id}, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	await(1) // the first goes at once

	p.HoldReplies()
	c.Nudge() // one at once
	await(2)
	p.Cut()
	p.Resume()
	lost := time.After(10 * time.Second)
	for lostSeen := false; !lostSeen; {
		select {
		case e := <-c.dev.Events():
			lostSeen = e.Kind == device.Lost
		case <-lost:
			t.Fatal("the sender never saw its connection cut")
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := c.dev.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	c.Nudge()
	await(3)
	mu.Lock()
	defer mu.Unlock()
	if copies[2] != 1 {
		t.Errorf("command 2, its PUBACK lost, arrived %d times; want once (copies by seq: %v)", copies[2], copies)
	}
}
