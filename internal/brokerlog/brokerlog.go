// Package brokerlog reads the broker's event log: the JSON lines that the
// aedes server in aedes/server.js writes to stdout, as the Docker engine
// hands them out with its own timestamps. It believes a malformed or cut
// line is a fact of life, not an error: such lines are counted and skipped,
// never allowed to stop a run.
package brokerlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Digest names a message by its payload, as the broker's publish lines do:
// the first 16 hex digits of the payload's SHA-256. It lets a subscriber's
// copy be matched with the broker's receipt of the same message.
func Digest(payload []byte) string {
	sum := sha256.Sum256(payload)
	return hex.EncodeToString(sum[:8])
}

// Event kinds, as server.js names them.
const (
	Listening        = "listening"
	Connect          = "connect"
	Disconnect       = "disconnect"
	KeepaliveTimeout = "keepalive_timeout"
	Connack          = "connack" // the broker's answer to a CONNECT was sent (SessionPresent)
	Subscribe        = "subscribe"
	Publish          = "publish"
	Ack              = "ack" // a client acknowledged (PUBACK) a QoS 1 message the broker delivered to it
	ClientError      = "client_error"
	ConnectionError  = "connection_error"
	Shutdown         = "shutdown"
)

// lagLimit is how far a reader's stamp may trail the line's own ts (whole
// milliseconds, so up to 1 ms behind the moment) before the ts is taken
// instead.
const lagLimit = 2 * time.Millisecond

// Stamp is an event's time: read, when the line was read (by the engine,
// or by us from the broker's output), unless that trails own, the line's
// own ts on the same clock, by more than lagLimit: a reader that fell
// behind stamps late, and the broker's millisecond is then closer. A zero
// read gives own.
func Stamp(read, own time.Time) time.Time {
	if read.IsZero() || (!own.IsZero() && read.Sub(own) > lagLimit) {
		return own
	}
	return read
}

// Subscription is one topic filter of a SUBSCRIBE.
type Subscription struct {
	Topic string `json:"topic"`
	QoS   int    `json:"qos"`
}

// Event is one broker event.
type Event struct {
	At        time.Time // the engine's timestamp of the line, or the broker's own ts (ms) when that is missing or the engine's lags
	EngineAt  time.Time // the engine's timestamp as given, zero without one: a line's place in the engine's stream
	Kind      string
	ClientID  string
	Topic     string
	MessageID int
	QoS       int
	Digest    string // of a publish or an ack: Digest of the payload, when the broker logs it
	// Subscriptions are a subscribe's topic filters with the QoS the broker
	// granted (128: refused).
	Subscriptions []Subscription
	// SessionPresent is a connack's flag: the broker had the client's
	// session (its subscriptions) when it connected.
	SessionPresent bool
}

type line struct {
	TS             int64          `json:"ts"`
	Event          string         `json:"event"`
	ClientID       *string        `json:"clientId"`
	Topic          string         `json:"topic"`
	MessageID      *int           `json:"messageId"`
	QoS            int            `json:"qos"`
	Digest         string         `json:"digest"`
	Topics         []Subscription `json:"topics"`
	SessionPresent bool           `json:"sessionPresent"`
}

// Parse reads one log line, optionally prefixed by the engine's RFC 3339
// timestamp and a space (docker logs --timestamps). ok is false for a line
// that is not a broker event.
func Parse(b []byte) (e Event, ok bool) {
	b = bytes.TrimSpace(b)
	var engineTime time.Time
	if i := bytes.IndexByte(b, ' '); i > 0 && b[0] != '{' {
		t, err := time.Parse(time.RFC3339Nano, string(b[:i]))
		if err != nil {
			return Event{}, false
		}
		engineTime, b = t, bytes.TrimSpace(b[i+1:])
	}
	if len(b) == 0 || b[0] != '{' {
		return Event{}, false
	}
	var l line
	if err := json.Unmarshal(b, &l); err != nil || l.Event == "" {
		return Event{}, false
	}
	e = Event{At: engineTime, EngineAt: engineTime, Kind: l.Event, Topic: l.Topic, QoS: l.QoS, Digest: l.Digest, SessionPresent: l.SessionPresent}
	e.Subscriptions = l.Topics
	own := time.Time{}
	if l.TS > 0 {
		own = time.UnixMilli(l.TS)
	}
	if engineTime.IsZero() && own.IsZero() {
		return Event{}, false
	}
	e.At = Stamp(engineTime, own)
	if l.ClientID != nil {
		e.ClientID = *l.ClientID
	}
	if l.MessageID != nil {
		e.MessageID = *l.MessageID
	}
	return e, true
}

// Lines splits a stream into lines across reads: feed it chunks with Write,
// and it calls fn for every complete line (fn must not keep the slice).
// A line longer than max is
// dropped (and counted), so a broken writer cannot grow memory without
// bound.
type Lines struct {
	fn      func([]byte)
	buf     []byte
	max     int
	skip    bool // inside a line that was too long
	Dropped int
}

// NewLines returns a splitter calling fn for each line of at most max bytes.
func NewLines(max int, fn func([]byte)) *Lines { return &Lines{fn: fn, max: max} }

// Write implements io.Writer.
func (l *Lines) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(l.buf)+len(p) > l.max {
				l.buf = l.buf[:0]
				l.Dropped++
				l.skip = true
			} else if !l.skip {
				l.buf = append(l.buf, p...)
			}
			return n, nil
		}
		if !l.skip && len(l.buf)+i <= l.max {
			l.fn(append(l.buf, p[:i]...))
		} else if !l.skip {
			l.Dropped++
		}
		l.buf, l.skip = l.buf[:0], false
		p = p[i+1:]
	}
	return n, nil
}
