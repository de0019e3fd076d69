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
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
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

// DefaultTimings are paho's own defaults, except keep-alive, which is the
// lab's 15 s.
var DefaultTimings = Timings{
	KeepAlive:            15 * time.Second,
	PingTimeout:          10 * time.Second,
	ConnectTimeout:       30 * time.Second,
	MaxReconnectInterval: 10 * time.Minute,
	ConnectRetryInterval: 30 * time.Second,
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
}

// EventKind says what happened to a device's connection.
type EventKind int

// Connection events, in the order a reconnect produces them.
const (
	Connecting    EventKind = iota // an attempt to connect starts
	ConnectFailed                  // an attempt failed
	Connected                      // the broker's CONNACK accepted the device
	Lost                           // an established connection was lost
)

var kindNames = [...]string{"connecting", "connect_failed", "connected", "lost"}

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
}

// eventBuffer is how many events may wait unread before new ones are dropped.
const eventBuffer = 4096

// Device is one connected (or reconnecting) MQTT device.
type Device struct {
	cfg     Config
	client  paho.Client
	events  chan Event
	dropped atomic.Int64
	seq     atomic.Int64
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
	d := &Device{cfg: cfg, events: make(chan Event, eventBuffer)}
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
		SetAutoReconnect(true).
		SetOrderMatters(false).
		SetConnectionNotificationHandler(d.notify)
	d.client = paho.NewClient(opts)
	return d, nil
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
		e.Kind = Connected
	case paho.ConnectionNotificationLost:
		e.Kind, e.Err = Lost, n.Reason
	default:
		return
	}
	select {
	case d.events <- e:
	default:
		d.dropped.Add(1)
	}
}

// Events delivers the device's connection events. Read it, or events beyond
// the buffer are dropped (counted by Dropped).
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
	seq := d.seq.Add(1)
	sent := time.Now()
	payload := fmt.Sprintf(`{"deviceId":%q,"seq":%d,"sentAt":%d}`, d.ID(), seq, sent.UnixNano())
	tok := d.client.Publish(d.cfg.Identity.Topic(), d.cfg.QoS, false, payload)
	if err := wait(ctx, tok); err != nil {
		return Message{Seq: seq, SentAt: sent}, fmt.Errorf("publish %d: %w", seq, err)
	}
	return Message{Seq: seq, SentAt: sent, Latency: time.Since(sent)}, nil
}

// Close disconnects, giving in-flight work up to 250 ms.
func (d *Device) Close() { d.client.Disconnect(250) }

// wait bridges a paho token to ctx.
func wait(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
