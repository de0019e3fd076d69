// Package device is the MQTT device client under test: a thin wrapper around
// paho that builds every option from our own Config (no hidden defaults),
// bridges paho's tokens to a context, and turns paho's callbacks into
// timestamped events on a channel. Timestamps are taken once, in the
// callback, so they carry Go's monotonic clock reading.
package device

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/mttrlab/mttr/internal/netfault"
)

// Timings are the client's timing policy. Each one changes how fast a
// device notices an outage and how fast it comes back, so all are explicit.
type Timings struct {
	KeepAlive            time.Duration // MQTT keep-alive (whole seconds)
	PingTimeout          time.Duration // how long to wait for PINGRESP before the connection counts as lost
	ConnectTimeout       time.Duration // how long one connection attempt may take
	MaxReconnectInterval time.Duration // cap of paho's doubling reconnect backoff
	ConnectRetryInterval time.Duration // wait between attempts of the first connection
}

// Config describes one device.
type Config struct {
	Identity     Identity
	BrokerAddr   string      // host:port to dial
	TLS          *tls.Config // RootCAs and ServerName to verify
	Timings      Timings
	CleanSession bool
	QoS          byte          // 1 unless measuring QoS 0 on purpose
	TokenTTL     time.Duration // lifetime of the SAS token; 0 means one day
	// ManualReconnect turns paho's automatic reconnect off: after a loss the
	// device stays down until Connect is called again.
	ManualReconnect bool
	// Resubscribe subscribes to the device's commands again in paho's
	// OnConnect after every reconnect, as a careful application does;
	// without it a device with a clean session reconnects deaf, as a naive
	// paho application does (paho does not resubscribe by itself).
	Resubscribe bool
	// Dial opens the TCP connection under the TLS; nil dials from any
	// local port.
	Dial netfault.Dial
	// OnEvent, when set, is handed each connection event as it happens,
	// on paho's goroutines, instead of Events; it must not block. A fleet
	// of thousands then needs no goroutine and no buffer per device to
	// read them, and none is dropped.
	OnEvent func(Event)
}

// EventKind says what happened to a device's connection.
type EventKind int

// Connection events, in the order a reconnect produces them.
const (
	Connecting    EventKind = iota // an attempt to connect starts
	ConnectFailed                  // an attempt failed
	Connected                      // the broker's CONNACK accepted the device
	Lost                           // an established connection was lost
	Subscribed                     // the broker acknowledged (SUBACK) the command subscription renewed after a reconnect
)

var kindNames = [...]string{"connecting", "connect_failed", "connected", "lost", "subscribed"}

func (k EventKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one connection event, stamped when paho reported it.
type Event struct {
	Kind    EventKind
	At      time.Time
	Attempt int   // attempt number for Connecting
	Err     error // reason for ConnectFailed and Lost, when paho gives one
	// SessionPresent is, for Connected, the CONNACK's flag: the broker had
	// the device's session (its subscriptions among it).
	SessionPresent bool
}

// eventBuffer is how many events may wait unread before new ones are dropped.
const eventBuffer = 16

// Device is one connected (or reconnecting) MQTT device.
type Device struct {
	cfg     Config
	client  paho.Client
	events  chan Event
	dropped atomic.Int64
	seq     atomic.Int64

	resubscribe atomic.Pointer[subscription] // Subscribe's, renewed after every reconnect
	commands    atomic.Pointer[subscription] // Listen's, renewed when cfg.Resubscribe
	connackAt   atomic.Int64                 // Unix ns the newest connection's first packet (CONNACK) arrived
	sessionOn   atomic.Bool                  // the newest CONNACK's session-present flag
	brokenAt    atomic.Int64                 // Unix ns the newest connection's first read error
	acks        acks                         // QoS 1 messages waiting for the PUBACK read off the wire
	// first wraps the first connection. Made with the device, it lies
	// beside what the device keeps, not among what the TLS handshake
	// leaves behind, where it would hold a page of that garbage; dial
	// takes it, so it goes with its connection.
	first atomic.Pointer[stampedConn]
}

// New builds a device from cfg without connecting it.
func New(cfg Config) (*Device, error) {
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 24 * time.Hour
	}
	if cfg.QoS > 1 {
		return nil, fmt.Errorf("device: qos %d: want 0 or 1", cfg.QoS)
	}
	token, err := cfg.Identity.SASToken(time.Now().Add(cfg.TokenTTL))
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	d := &Device{cfg: cfg}
	d.first.Store(new(stampedConn))
	if cfg.OnEvent == nil {
		d.events = make(chan Event, eventBuffer)
	}
	t := cfg.Timings
	opts := paho.NewClientOptions().
		AddBroker("tls://" + cfg.BrokerAddr).
		SetTLSConfig(cfg.TLS).
		SetClientID(cfg.Identity.ClientID()).
		SetUsername(cfg.Identity.Username()).
		SetPassword(token).
		SetProtocolVersion(4).
		SetCleanSession(cfg.CleanSession).
		SetKeepAlive(t.KeepAlive).
		SetPingTimeout(t.PingTimeout).
		SetConnectTimeout(t.ConnectTimeout).
		SetMaxReconnectInterval(t.MaxReconnectInterval).
		SetConnectRetryInterval(t.ConnectRetryInterval).
		SetConnectRetry(false).
		SetAutoReconnect(!cfg.ManualReconnect).
		SetOrderMatters(false).
		SetConnectionNotificationHandler(d.notify).
		SetOnConnectHandler(d.onConnect).
		SetCustomOpenConnectionFn(d.dial)
	d.client = paho.NewClient(opts)
	return d, nil
}

// dial opens the TLS connection for paho and wraps it, so that the moment
// the CONNACK arrives and the moment the connection breaks are stamped
// where they happen, not when paho gets round to notifying us.
func (d *Device) dial(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	dialer := &net.Dialer{Timeout: o.ConnectTimeout}
	var conn net.Conn
	var err error
	if d.cfg.Dial == nil {
		conn, err = tls.DialWithDialer(dialer, "tcp", uri.Host, o.TLSConfig)
	} else {
		// paho gives its dial no context: the connect timeout bounds it.
		ctx, cancel := context.WithTimeout(context.Background(), o.ConnectTimeout)
		conn, err = netfault.DialTLS(ctx, d.cfg.Dial, uri.Host, o.TLSConfig)
		cancel()
	}
	if err != nil {
		return nil, err
	}
	d.connackAt.Store(0)
	d.sessionOn.Store(false)
	d.brokenAt.Store(0)
	c := d.first.Swap(nil)
	if c == nil {
		c = new(stampedConn)
	}
	c.Conn, c.d = conn, d
	return c, nil
}

// stampedConn records the first read (the CONNACK, whose session-present
// flag it reads too), each PUBACK, and the first read error, as they come
// off the wire. paho reads it from one goroutine.
type stampedConn struct {
	net.Conn
	d             *Device
	first, broken atomic.Bool
	frames        framer
}

func (c *stampedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		now := time.Now()
		if !c.first.Swap(true) {
			c.d.connackAt.Store(now.UnixNano())
		}
		c.frames.feed(p[:n], func(typ byte, head []byte) {
			switch {
			case typ == packetConnack && len(head) >= 1: // acknowledge flags, bit 0: session present
				c.d.sessionOn.Store(head[0]&1 == 1)
			case typ == packetPuback && len(head) >= 2: // packet id
				c.d.acks.puback(uint16(head[0])<<8|uint16(head[1]), now)
			}
		})
	}
	if err != nil && !c.broken.Swap(true) {
		c.d.brokenAt.Store(time.Now().UnixNano())
	}
	return n, err
}

// notify runs on paho's goroutines; it must never block.
func (d *Device) notify(_ paho.Client, n paho.ConnectionNotification) {
	e := Event{At: time.Now()}
	switch n := n.(type) {
	case paho.ConnectionNotificationConnecting:
		e.Kind, e.Attempt = Connecting, n.Attempt
	case paho.ConnectionNotificationFailed:
		e.Kind, e.Err = ConnectFailed, n.Reason
	case paho.ConnectionNotificationConnected:
		e.Kind, e.SessionPresent = Connected, d.sessionOn.Load()
		if at := d.connackAt.Load(); at != 0 {
			e.At = time.Unix(0, at)
		}
	case paho.ConnectionNotificationLost:
		d.acks.failed() // paho fails a message whose write broke before it reports the loss
		e.Kind, e.Err = Lost, n.Reason
		if at := d.brokenAt.Load(); at != 0 {
			e.At = time.Unix(0, at)
		}
	default:
		return
	}
	d.emit(e)
}

// emit hands e to OnEvent, or to Events without blocking.
func (d *Device) emit(e Event) {
	if d.cfg.OnEvent != nil {
		d.cfg.OnEvent(e)
		return
	}
	select {
	case d.events <- e:
	default:
		d.dropped.Add(1)
	}
}

// Events delivers the device's connection events. Read it, or events beyond
// the buffer are dropped (counted by Dropped). With Config.OnEvent it is
// nil: the events go there.
func (d *Device) Events() <-chan Event { return d.events }

// Dropped is how many events were dropped because nobody read Events.
func (d *Device) Dropped() int64 { return d.dropped.Load() }

// ID is the device id.
func (d *Device) ID() string { return d.cfg.Identity.DeviceID }

// Connect makes the first connection. It fails when the broker refuses or
// cannot be reached; after it succeeds, paho reconnects on its own.
func (d *Device) Connect(ctx context.Context) error {
	if err := wait(ctx, d.client.Connect()); err != nil {
		return fmt.Errorf("connect %s: %w", d.cfg.BrokerAddr, err)
	}
	return nil
}

// ConnackAt is when the newest connection's CONNACK arrived, as read from
// the socket; zero before the first one.
func (d *Device) ConnackAt() time.Time {
	if at := d.connackAt.Load(); at != 0 {
		return time.Unix(0, at)
	}
	return time.Time{}
}

// IsConnectionOpen reports whether the device has a live connection now
// (paho's IsConnected is also true while it reconnects).
func (d *Device) IsConnectionOpen() bool { return d.client.IsConnectionOpen() }

// Message is one acknowledged telemetry message.
type Message struct {
	Seq     int64
	SentAt  time.Time
	Latency time.Duration // from handing it to paho to its PUBACK (QoS 1) or its write (QoS 0)
}

// Publish sends one telemetry message and waits for its PUBACK, or until
// ctx ends.
func (d *Device) Publish(ctx context.Context) (Message, error) {
	p := d.Send()
	at, err := p.Wait(ctx)
	if err != nil {
		return Message{Seq: p.Seq, SentAt: p.SentAt}, err
	}
	return Message{Seq: p.Seq, SentAt: p.SentAt, Latency: at.Sub(p.SentAt)}, nil
}

// Pending is a telemetry message handed to paho and not yet acknowledged.
type Pending struct {
	Seq    int64
	SentAt time.Time
	tok    paho.Token
	id     uint16 // its packet id, under which it waits for its PUBACK; 0 when its token says all (QoS 0, or refused)
	// acked is closed when a QoS 1 message's PUBACK was read (at) or it
	// can have none (err); nil for QoS 0, whose token says all, and for a
	// message whose settling calls done instead (SendNotify).
	acked   chan struct{}
	done    func(seq int64, at time.Time, err error)
	settled atomic.Bool
	at      time.Time
	err     error
}

func (p *Pending) settle(at time.Time, err error) {
	if p.settled.Swap(true) {
		return
	}
	p.at, p.err = at, err
	if p.acked != nil {
		close(p.acked)
	}
	if p.done != nil {
		p.done(p.Seq, at, err)
	}
}

// failed is the reason paho failed p's token, nil while it has not.
func (p *Pending) failed() error {
	select {
	case <-p.tok.Done():
		if err := p.tok.Error(); err != nil {
			return fmt.Errorf("publish %d: %w", p.Seq, err)
		}
	default:
	}
	return nil
}

// publish hands paho the payload made for the moment it is sent, for
// topic, and registers it for its PUBACK.
func (d *Device) publish(seq int64, topic string, qos byte, payload func(sent time.Time) []byte, done func(int64, time.Time, error)) *Pending {
	return d.acks.publish(func() *Pending {
		p := &Pending{Seq: seq, SentAt: time.Now(), done: done}
		p.tok = d.client.Publish(topic, qos, false, payload(p.SentAt))
		if pt, ok := p.tok.(*paho.PublishToken); ok && qos > 0 {
			p.id = pt.MessageID()
		}
		return p
	})
}

// Send hands the next telemetry message to paho without waiting. Its payload
// is {"deviceId":..., "seq":..., "sentAt":<Unix ns>}; seq counts from 1.
// While the device reconnects, paho keeps QoS 1 messages and sends them
// once the connection is back.
func (d *Device) Send() *Pending { return d.send(nil) }

func (d *Device) send(done func(int64, time.Time, error)) *Pending {
	seq := d.seq.Add(1)
	return d.publish(seq, d.cfg.Identity.Topic(), d.cfg.QoS, func(sent time.Time) []byte {
		return fmt.Appendf(nil, `{"deviceId":%q,"seq":%d,"sentAt":%d}`, d.ID(), seq, sent.UnixNano())
	}, done)
}

// SendNotify is Send, and calls done once with what Wait would return:
// when the message's PUBACK was read off the wire, or why it will have
// none. A QoS 1 message costs no goroutine meanwhile: done runs on the
// goroutine that settles it (paho's reader at its PUBACK, the caller's
// when it fails at once, paho's when the device reports the connection
// lost after paho failed it, or Close's), so it must not block. A QoS 0
// message is waited for by a goroutine until ctx ends. Do not call Wait
// on what it returns.
func (d *Device) SendNotify(ctx context.Context, done func(seq int64, at time.Time, err error)) *Pending {
	p := d.send(done)
	switch {
	case p.id != 0:
		if err := p.failed(); err != nil { // paho gave up before it returned
			p.settle(time.Time{}, err)
		}
	default: // its token says all
		go func() {
			at, err := p.Wait(ctx)
			p.settle(at, err)
		}()
	}
	return p
}

// Wait waits for the message's PUBACK and returns when it was read off the
// wire; for QoS 0, until paho handed it to the network. A token paho
// completes without a PUBACK (it does for a stored message it sends again
// after a reconnect) does not end the wait; one it fails does.
func (p *Pending) Wait(ctx context.Context) (time.Time, error) {
	if p.acked == nil {
		if err := wait(ctx, p.tok); err != nil {
			return time.Time{}, fmt.Errorf("publish %d: %w", p.Seq, err)
		}
		return time.Now(), nil
	}
	tok := p.tok.Done()
	for {
		select {
		case <-p.acked: // settled counts even when ctx ended too
			return p.at, p.err
		default:
		}
		select {
		case <-p.acked:
			return p.at, p.err
		case <-tok:
			if err := p.tok.Error(); err != nil {
				p.settle(time.Time{}, fmt.Errorf("publish %d: %w", p.Seq, err))
			}
			tok = nil // completed: the PUBACK may still be on its way
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("publish %d: %w", p.Seq, context.Cause(ctx))
		}
	}
}

// Telemetry is the payload a device publishes.
type Telemetry struct {
	DeviceID string `json:"deviceId"`
	Seq      int64  `json:"seq"`
	SentAt   int64  `json:"sentAt"`
}

// Subscribe subscribes to topic (wildcards allowed) and calls fn, on paho's
// goroutine, for every message delivered; fn must not block. The
// subscription is renewed after every reconnect.
func (d *Device) Subscribe(ctx context.Context, topic string, qos byte, fn func(topic string, payload []byte, at time.Time)) error {
	handler := func(_ paho.Client, m paho.Message) { fn(m.Topic(), m.Payload(), time.Now()) }
	d.resubscribe.Store(&subscription{topic: topic, qos: qos, handler: handler})
	if err := wait(ctx, d.client.Subscribe(topic, qos, handler)); err != nil {
		return fmt.Errorf("subscribe %s: %w", topic, err)
	}
	return nil
}

type subscription struct {
	topic   string
	qos     byte
	filters func() map[string]byte // several topics in one SUBSCRIBE, when topic is empty; made for each, not kept
	handler paho.MessageHandler
}

func (s *subscription) send(c paho.Client) paho.Token {
	if s.filters != nil {
		return c.SubscribeMultiple(s.filters(), s.handler)
	}
	return c.Subscribe(s.topic, s.qos, s.handler)
}

// CommandFilters are the topics a device subscribes to for what the cloud
// sends it, as IoT device SDKs do: cloud-to-device messages (QoS 1), and
// twin responses and direct methods (QoS 0), in one SUBSCRIBE.
func (id Identity) CommandFilters() map[string]byte {
	return map[string]byte{
		id.CommandTopic() + "#":  1,
		"$iothub/twin/res/#":     0,
		"$iothub/methods/POST/#": 0,
	}
}

// CommandTopic is where the cloud sends the device its messages,
// "devices/<id>/messages/devicebound/".
func (id Identity) CommandTopic() string { return "devices/" + id.DeviceID + "/messages/devicebound/" }

// Listen subscribes the device to its commands (CommandFilters) and calls
// fn, on paho's goroutine, for every message delivered; fn must not block.
// After a reconnect the subscription is renewed only with
// Config.Resubscribe.
func (d *Device) Listen(ctx context.Context, fn func(topic string, payload []byte, at time.Time)) error {
	handler := func(_ paho.Client, m paho.Message) { fn(m.Topic(), m.Payload(), time.Now()) }
	s := &subscription{filters: d.cfg.Identity.CommandFilters, handler: handler}
	d.commands.Store(s)
	if err := wait(ctx, s.send(d.client)); err != nil {
		return fmt.Errorf("subscribe %s#: %w", d.cfg.Identity.CommandTopic(), err)
	}
	return nil
}

// onConnect renews subscriptions after a reconnect; paho runs it on its
// own goroutine.
func (d *Device) onConnect(c paho.Client) {
	if s := d.resubscribe.Load(); s != nil {
		s.send(c)
	}
	if s := d.commands.Load(); s != nil && d.cfg.Resubscribe {
		tok := s.send(c)
		go func() { // paho waits for its callbacks: do not block it
			if tok.WaitTimeout(d.cfg.Timings.ConnectTimeout) && tok.Error() == nil {
				d.emit(Event{Kind: Subscribed, At: time.Now()}) // when paho handed over the SUBACK
			}
		}()
	}
}

// PublishTo hands a message for topic to paho without waiting, with QoS 1.
// When the device has no connection open it sends nothing and returns nil.
func (d *Device) PublishTo(topic string, payload []byte) *Pending {
	if !d.client.IsConnectionOpen() {
		return nil
	}
	return d.publish(0, topic, 1, func(time.Time) []byte { return payload }, nil)
}

// Close disconnects, giving in-flight work up to 250 ms.
func (d *Device) Close() {
	d.client.Disconnect(250)
	d.acks.failed() // paho failed what was in flight
}

// wait bridges a paho token to ctx.
func wait(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done(): // done counts even when ctx ended too
		return tok.Error()
	default:
	}
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
