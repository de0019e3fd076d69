package device

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/mttrlab/mttr/internal/certs"
	"github.com/mttrlab/mttr/internal/link"
	"github.com/mttrlab/mttr/internal/mqtttest"
	"github.com/mttrlab/mttr/internal/netfault"
)

func testConfig(b *mqtttest.Broker) Config {
	return Config{
		Identity:   Identity{HostName: b.Host, DeviceID: "devicemtr", SharedAccessKey: "Zm9vYmFy"},
		BrokerAddr: b.Addr,
		TLS:        b.Client,
		Timings: Timings{
			KeepAlive: 2 * time.Second, PingTimeout: time.Second, ConnectTimeout: 2 * time.Second,
			MaxReconnectInterval: time.Second, ConnectRetryInterval: time.Second,
		},
		QoS: 1,
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// next returns the next event of kind, failing the test when ctx ends first.
func next(ctx context.Context, t *testing.T, d *Device, kind EventKind) Event {
	t.Helper()
	for {
		select {
		case e := <-d.Events():
			if e.Kind == kind {
				return e
			}
		case <-ctx.Done():
			t.Fatalf("no %s event: %v", kind, ctx.Err())
		}
	}
}

func TestPublishQoS1(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	d, err := New(testConfig(b))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	before := time.Now()
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	if e := next(ctx, t, d, Connected); e.At.Before(before) {
		t.Errorf("connected event at %v, before Connect was called at %v", e.At, before)
	}
	if !d.IsConnectionOpen() {
		t.Error("IsConnectionOpen = false after Connect")
	}
	for want := int64(1); want <= 3; want++ {
		m, err := d.Publish(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.Seq != want || m.Latency <= 0 {
			t.Errorf("message %+v, want seq %d and a positive latency", m, want)
		}
	}
}

func TestLostAndReconnected(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	d, err := New(testConfig(b))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	next(ctx, t, d, Connected)
	b.Close()
	lost := next(ctx, t, d, Lost)
	att := next(ctx, t, d, Connecting)
	if att.At.Before(lost.At) {
		t.Errorf("reconnect attempt %v before loss %v", att.At, lost.At)
	}
	if d.IsConnectionOpen() {
		t.Error("IsConnectionOpen = true with the broker gone")
	}
}

func TestRejectsCertificateForAnotherHost(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	other := certs.For(t.TempDir(), "localhost")
	if _, err := certs.Generate(other, 1); err != nil {
		t.Fatal(err)
	}
	pool, err := certs.Pool(other.CertPath)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]func(*Config){
		"other certificate": func(c *Config) { c.TLS = c.TLS.Clone(); c.TLS.RootCAs = pool },
		"other name":        func(c *Config) { c.TLS = c.TLS.Clone(); c.TLS.ServerName = "alohomora.net" },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(b)
			mutate(&cfg)
			d, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(d.Close)
			err = d.Connect(ctxT(t))
			var unknown x509.UnknownAuthorityError
			var host x509.HostnameError
			if err == nil || !(errors.As(err, &unknown) || errors.As(err, &host)) {
				t.Fatalf("Connect = %v, want a certificate verification error", err)
			}
		})
	}
}

func TestNewRejectsQoS2(t *testing.T) {
	cfg := Config{Identity: Identity{HostName: "h", DeviceID: "d", SharedAccessKey: "YQ=="}, QoS: 2}
	if _, err := New(cfg); err == nil {
		t.Error("New with QoS 2 = nil error")
	}
}

// TestDroppedEvents fills the event buffer without reading it: what does
// not fit is counted, never blocks paho.
func TestDroppedEvents(t *testing.T) {
	d, err := New(Config{Identity: Identity{HostName: "h", DeviceID: "d", SharedAccessKey: "YQ=="}, QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	for range eventBuffer + 5 {
		d.notify(nil, paho.ConnectionNotificationConnected{})
	}
	if got := d.Dropped(); got != 5 {
		t.Errorf("Dropped = %d, want 5", got)
	}
	if got := len(d.Events()); got != eventBuffer {
		t.Errorf("%d events buffered, want %d", got, eventBuffer)
	}
}

// TestOnEvent: with Config.OnEvent every event goes to it, stamped as
// Events would have it, none is dropped however many come unread, and
// Events is nil.
func TestOnEvent(t *testing.T) {
	var got []Event
	cfg := Config{Identity: Identity{HostName: "h", DeviceID: "d", SharedAccessKey: "YQ=="}, QoS: 1, OnEvent: func(e Event) { got = append(got, e) }}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.connackAt.Store(time.Unix(0, 42).UnixNano())
	for range eventBuffer + 5 {
		d.notify(nil, paho.ConnectionNotificationConnected{})
	}
	if len(got) != eventBuffer+5 || d.Dropped() != 0 || d.Events() != nil {
		t.Fatalf("%d events handed over, %d dropped, Events %v; want %d, 0, nil", len(got), d.Dropped(), d.Events(), eventBuffer+5)
	}
	if e := got[0]; e.Kind != Connected || e.At.UnixNano() != 42 {
		t.Errorf("event %v at %d, want connected at the CONNACK's stamp 42", e.Kind, e.At.UnixNano())
	}
}

// TestSessionPresent reads the CONNACK's session-present flag from the
// connection: a device that asks to keep its session finds it on its
// second connection to the same broker, and a restarted broker has none.
func TestSessionPresent(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	cfg := testConfig(b)
	cfg.CleanSession = false
	connect := func() Event {
		d, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ctx := ctxT(t)
		if err := d.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		return next(ctx, t, d, Connected)
	}
	if e := connect(); e.SessionPresent {
		t.Error("a first connection found a session")
	}
	if e := connect(); !e.SessionPresent {
		t.Error("the session kept by the broker was not seen")
	}
	b.Close()
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	if e := connect(); e.SessionPresent {
		t.Error("a restarted broker's CONNACK read as session present")
	}
}

// doneToken is a paho token that completed without error.
type doneToken struct{ done chan struct{} }

func (t doneToken) Wait() bool                     { return true }
func (t doneToken) WaitTimeout(time.Duration) bool { return true }
func (t doneToken) Done() <-chan struct{}          { return t.done }
func (t doneToken) Error() error                   { return nil }

// failedToken is a paho token that paho failed.
type failedToken struct{ doneToken }

func (t failedToken) Error() error { return errors.New("write broke") }

// TestSendNotify: done is called once, with what Wait would return: the
// PUBACK read off the wire for a message acknowledged; the reason for one
// paho failed, at once (not connected) or later (found when the device
// reports the connection lost, or closes), and not again for a PUBACK
// that comes after.
func TestSendNotify(t *testing.T) {
	type result struct {
		seq int64
		at  time.Time
		err error
	}
	notified := func() (chan result, func(int64, time.Time, error)) {
		ch := make(chan result, 2)
		return ch, func(seq int64, at time.Time, err error) { ch <- result{seq, at, err} }
	}
	ctx := ctxT(t)
	recv := func(ch chan result) result {
		t.Helper()
		select {
		case r := <-ch:
			return r
		case <-ctx.Done():
			t.Fatal("done not called")
			return result{}
		}
	}
	b := mqtttest.Start(t, "localhost")
	d, err := New(testConfig(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	ch, done := notified()
	p := d.SendNotify(ctx, done)
	if r := recv(ch); r.err != nil || r.seq != p.Seq || r.at.Before(p.SentAt) {
		t.Errorf("acknowledged message: seq %d at %v (%v); want seq %d, its PUBACK after %v", r.seq, r.at, r.err, p.Seq, p.SentAt)
	}

	idle, err := New(testConfig(b)) // never connected: paho fails it at once
	if err != nil {
		t.Fatal(err)
	}
	ch, done = notified()
	idle.SendNotify(ctx, done)
	if r := recv(ch); r.err == nil {
		t.Error("a message to a device never connected: no error")
	}

	var a acks
	ch, done = notified()
	tok := failedToken{doneToken{make(chan struct{})}}
	a.publish(func() *Pending {
		return &Pending{Seq: 3, SentAt: time.Now(), tok: doneToken{make(chan struct{})}, id: 9, done: done}
	})
	a.failed()
	if len(ch) != 0 {
		t.Fatal("settled by a sweep while paho had not failed it")
	}
	a.waiting[9].tok = tok
	close(tok.done)
	a.failed()
	a.puback(9, time.Now())
	if r := recv(ch); r.err == nil || r.seq != 3 || len(ch) != 0 {
		t.Errorf("failed by paho: seq %d (%v), %d more calls; want seq 3 with an error, once", r.seq, r.err, len(ch))
	}
}

// TestWaitPrefersDone: a message acknowledged before its deadline counts
// even when the deadline has passed by the time it is asked (a wait that
// chose at random between the two would fail about half of these).
func TestWaitPrefersDone(t *testing.T) {
	tok := doneToken{make(chan struct{})}
	close(tok.done)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for i := range 64 {
		if err := wait(ctx, tok); err != nil {
			t.Fatalf("try %d: %v, want the acknowledgement", i, err)
		}
	}
}

// TestFramer feeds a stream of packets in pieces of every size and checks
// that each packet, and the first bytes of its body, come out whole.
func TestFramer(t *testing.T) {
	big := make([]byte, 200) // a remaining length of two bytes
	big[0], big[1] = 0xaa, 0xbb
	stream := append([]byte{0x20, 2, 1, 0, 0x40, 2, 0x12, 0x34, 0xd0, 0, 0x30, 0xc8, 1}, big...)
	stream = append(stream, 0x40, 2, 0xff, 0xfe)
	want := "2:0100 4:1234 13: 3:aabb0000 4:fffe "
	for size := 1; size <= len(stream); size++ {
		var f framer
		var got strings.Builder
		for b := stream; len(b) > 0; {
			n := min(size, len(b))
			f.feed(b[:n], func(typ byte, head []byte) { fmt.Fprintf(&got, "%d:%x ", typ, head) })
			b = b[n:]
		}
		if got.String() != want {
			t.Fatalf("reads of %d bytes: %q, want %q", size, got.String(), want)
		}
	}
}

// TestResentMessageWaitsForItsPuback publishes while the broker is away,
// so that paho stores the message and sends it again after the reconnect,
// over a link with 150 ms each way. paho completes such a message's token
// when it sends it, but its PUBACK comes a round trip later: Wait must
// return no sooner than that round trip after the CONNACK (the resend
// leaves after it), not at the token.
func TestResentMessageWaitsForItsPuback(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	lk, err := link.Start("127.0.0.1:0", b.Addr, netfault.Link{})
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	cfg := testConfig(b)
	cfg.BrokerAddr = lk.Addr()
	cfg.Timings.ConnectTimeout = 5 * time.Second
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	next(ctx, t, d, Connected)
	b.Close()
	next(ctx, t, d, Lost)
	p := d.Send() // stored: paho sends it once it is back
	const latency = 150 * time.Millisecond
	if err := lk.Fault(netfault.Link{Latency: latency}); err != nil {
		t.Fatal(err)
	}
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	at, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after := at.Sub(d.ConnackAt()); after < 2*latency {
		t.Errorf("acknowledged %v after the CONNACK, want ≥ %v: the resent message's PUBACK crosses the link both ways after it", after, 2*latency)
	}
}

// TestAcksEarlyPuback: a PUBACK read before its message was registered
// (paho sent it before Publish returned) settles it; one older than the
// message (another's, left over) does not, and the message waits for its
// own.
func TestAcksEarlyPuback(t *testing.T) {
	var a acks
	sent := time.Now()
	a.puback(7, sent.Add(time.Millisecond))
	p := a.publish(func() *Pending {
		return &Pending{Seq: 1, SentAt: sent, tok: doneToken{make(chan struct{})}, id: 7}
	})
	if at, err := p.Wait(t.Context()); err != nil || !at.Equal(sent.Add(time.Millisecond)) {
		t.Errorf("early PUBACK: %v, %v", at, err)
	}
	a.puback(8, sent.Add(-time.Second)) // before the next message was sent
	q := a.publish(func() *Pending {
		return &Pending{Seq: 2, SentAt: sent, tok: doneToken{make(chan struct{})}, id: 8}
	})
	select {
	case <-q.acked:
		t.Fatal("settled by a PUBACK older than the message")
	default:
	}
	a.puback(8, sent.Add(2*time.Millisecond))
	if at, err := q.Wait(t.Context()); err != nil || !at.Equal(sent.Add(2*time.Millisecond)) {
		t.Errorf("its own PUBACK: %v, %v", at, err)
	}
}
