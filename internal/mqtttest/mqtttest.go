// Package mqtttest runs an in-process MQTT broker (mochi-mqtt) over TLS on
// 127.0.0.1 for tests that must not need Docker, and a proxy in front of it
// that can freeze traffic. Its certificate comes from package certs, so the
// TLS path is the one the real broker uses.
package mqtttest

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mttrlab/mttr/internal/certs"
)

// Broker is an in-process broker that can be stopped and started again on
// the same address.
type Broker struct {
	Addr     string      // host:port it listens on
	Host     string      // name its certificate carries
	CertPath string      // its certificate, the only root a client needs
	KeyPath  string      // its private key
	Client   *tls.Config // trusts only the certificate and verifies Host

	server *tls.Config
	events io.Writer // where accepted connections are logged; nil: nowhere
	mu     sync.Mutex
	srv    *mochi.Server // nil while stopped
}

// Start runs a broker on 127.0.0.1 with a fresh certificate for host and
// stops it when the test ends.
func Start(t testing.TB, host string) *Broker {
	t.Helper()
	pair := certs.For(t.TempDir(), host)
	if _, err := certs.Generate(pair, 1); err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(pair.CertPath, pair.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := certs.Pool(pair.CertPath)
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{
		Addr:     "127.0.0.1:0",
		Host:     host,
		CertPath: pair.CertPath,
		KeyPath:  pair.KeyPath,
		Client:   &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12},
		server:   &tls.Config{Certificates: []tls.Certificate{kp}},
	}
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// Serve runs a broker with the certificate and key files on addr until the
// process ends; for a test binary that plays a broker process. It writes
// the connections it accepts to events as the broker image's log lines
// ("connect" events), when events is not nil.
func Serve(addr, certFile, keyFile string, events io.Writer) error {
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	b := &Broker{Addr: addr, server: &tls.Config{Certificates: []tls.Certificate{kp}}, events: events}
	return b.Restart()
}

// connectLog writes a log line for every session established.
type connectLog struct {
	mochi.HookBase
	mu sync.Mutex
	w  io.Writer
}

func (h *connectLog) ID() string { return "connect-log" }

func (h *connectLog) Provides(b byte) bool { return b == mochi.OnSessionEstablished }

func (h *connectLog) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	line, _ := json.Marshal(struct {
		TS       int64  `json:"ts"`
		Event    string `json:"event"`
		ClientID string `json:"clientId"`
	}{time.Now().UnixMilli(), "connect", cl.ID})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.w.Write(append(line, '\n'))
}

// Restart starts the broker again on its address after Close. It has no
// memory of earlier sessions, like a restarted container.
func (b *Broker) Restart() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		return nil
	}
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	if b.events != nil {
		if err := srv.AddHook(&connectLog{w: b.events}, nil); err != nil {
			return err
		}
	}
	ln := listeners.NewTCP(listeners.Config{ID: "tls", Address: b.Addr, TLSConfig: b.server})
	if err := srv.AddListener(ln); err != nil {
		return err
	}
	if err := srv.Serve(); err != nil {
		return err
	}
	b.Addr = ln.Address()
	b.srv = srv
	return nil
}

// Close stops the broker and drops every client. Calling it twice is safe.
func (b *Broker) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		_ = b.srv.Close()
		b.srv = nil
	}
}

// Proxy relays TCP connections to a target and can freeze them: while
// paused, connections stay open but no byte moves in either direction and
// new connections wait, as with a frozen broker. It can also hold back
// only what the target sends, and cut the connections it relays.
type Proxy struct {
	Addr   string
	target string
	ln     net.Listener

	mu      sync.Mutex
	open    chan struct{} // closed while traffic flows
	replies chan struct{} // closed while what the target sends flows
	conns   map[net.Conn]struct{}
	closed  bool
}

// NewProxy relays connections on a free port of 127.0.0.1 to target until
// the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, open: make(chan struct{}), replies: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.open)
	close(p.replies)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Pause freezes traffic.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

// HoldReplies freezes what the target sends until Resume; what clients
// send still flows, as when the broker's acknowledgements are lost.
func (p *Proxy) HoldReplies() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.replies:
		p.replies = make(chan struct{})
	default:
	}
}

// Resume lets traffic flow again, both ways.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, gate := range []chan struct{}{p.open, p.replies} {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}
}

// Cut closes every connection relayed so far, as a network that drops
// them would; what they held back is lost. New connections are relayed.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *Proxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

// replyGate is open while both traffic and what the target sends flow.
func (p *Proxy) replyGate() <-chan struct{} {
	p.mu.Lock()
	open, replies := p.open, p.replies
	p.mu.Unlock()
	select {
	case <-replies:
		return open
	default:
		return replies
	}
}

// Close stops the proxy and drops its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.Resume()
	p.ln.Close()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(in) {
			return
		}
		go func() {
			<-p.gate()
			out, err := net.Dial("tcp", p.target)
			if err != nil || !p.track(out) {
				in.Close()
				return
			}
			go p.pipe(out, in, p.gate)
			p.pipe(in, out, p.replyGate)
		}()
	}
}

// pipe copies src to dst, holding each chunk while gate is not open.
func (p *Proxy) pipe(dst, src net.Conn, gate func() <-chan struct{}) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
