package mttr

import (
	"context"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/mqttprobe"
)

// TestBrokerLogSessions follows who is connected through connects,
// disconnects, keep-alive timeouts and a broker restart, leaving probes'
// one-off ids out.
func TestBrokerLogSessions(t *testing.T) {
	at := func(ms int) time.Time { return time.UnixMilli(int64(1000 + ms)) }
	var b BrokerLog
	ctx := context.Background()
	if b.AwaitConnect(ctx, mqttprobe.ProbeClientPrefix, time.Millisecond) {
		t.Error("a probe seen in an empty log")
	}
	for _, e := range []brokerlog.Event{
		{At: at(0), Kind: brokerlog.Listening},
		{At: at(1), Kind: brokerlog.Connect, ClientID: mqttprobe.ProbeClientPrefix + "1a2b"},
		{At: at(2), Kind: brokerlog.Connect, ClientID: "d"},
		{At: at(3), Kind: brokerlog.Connect, ClientID: "d-2"},
		{At: at(4), Kind: brokerlog.Connect, ClientID: "d-3"},
		{At: at(5), Kind: brokerlog.Disconnect, ClientID: "d-2"},
		{At: at(6), Kind: brokerlog.KeepaliveTimeout, ClientID: "d-3"},
	} {
		b.Observe(e)
	}
	if !b.AwaitConnect(ctx, mqttprobe.ProbeClientPrefix, time.Millisecond) || !b.AwaitConnect(ctx, "d", time.Millisecond) {
		t.Error("connects not seen")
	}
	for id, want := range map[string]bool{"d": true, "d-2": false, "d-3": false, mqttprobe.ProbeClientPrefix + "1a2b": false} {
		since, ok := b.ConnectedSince(id)
		if ok != want || (ok && !since.Equal(at(2))) {
			t.Errorf("ConnectedSince(%s) = %v, %v; want %v", id, since, ok, want)
		}
	}
	b.Observe(brokerlog.Event{At: at(10), Kind: brokerlog.Listening})
	if _, ok := b.ConnectedSince("d"); ok {
		t.Error("still connected after the broker restarted")
	}
}

// TestBrokerLogAwaitProbe waits until the log has reached a probe's
// connect at or after a moment, and no longer than its timeout.
func TestBrokerLogAwaitProbe(t *testing.T) {
	at := func(ms int) time.Time { return time.UnixMilli(int64(1000 + ms)) }
	var b BrokerLog
	ctx := context.Background()
	b.Observe(brokerlog.Event{At: at(5), Kind: brokerlog.Connect, ClientID: mqttprobe.ProbeClientPrefix + "a"})
	if !b.awaitProbe(ctx, at(5), time.Millisecond) {
		t.Error("a probe at 5 not seen at 5")
	}
	if b.awaitProbe(ctx, at(6), time.Millisecond) {
		t.Error("a probe at 5 seen as one at 6 or later")
	}
	go b.Observe(brokerlog.Event{At: at(9), Kind: brokerlog.Connect, ClientID: mqttprobe.ProbeClientPrefix + "b"})
	if !b.awaitProbe(ctx, at(6), time.Minute) {
		t.Error("a later probe was not waited for")
	}
	var none *BrokerLog
	if none.awaitProbe(ctx, at(0), time.Minute) {
		t.Error("no log seen as caught up")
	}
}

// TestAcceptPeak counts the busiest second of connects in a window: 3
// within 0.9 s, then 2, with probes and connects outside the window left
// out.
func TestAcceptPeak(t *testing.T) {
	var b BrokerLog
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		id string
		ms int
	}{{"a", -500}, {"a", 100}, {"b", 400}, {"c", 1000}, {mqttprobe.ProbeClientPrefix + "1", 1050}, {"d", 1100}, {"e", 2500}, {"f", 9000}} {
		b.Observe(brokerlog.Event{Kind: brokerlog.Connect, ClientID: c.id, At: t0.Add(time.Duration(c.ms) * time.Millisecond)})
	}
	if got := b.acceptPeak(t0, t0.Add(3*time.Second)); got != 3 { // b, c, d within (0.1, 1.1]
		t.Errorf("peak %d, want 3", got)
	}
	if got := (*BrokerLog)(nil).acceptPeak(t0, t0); got != 0 {
		t.Errorf("no log: %d", got)
	}
}
