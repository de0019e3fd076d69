// Package mqtttest runs an in-process MQTT broker (mochi-mqtt) over TLS on
// 127.0.0.1 for tests that must not need Docker. Its certificate comes from
// package certs, so the TLS path is the one the real broker uses.
package mqtttest

import (
	"crypto/tls"
	"io"
	"log/slog"
	"sync"
	"testing"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/mttrlab/mttr/internal/certs"
)

// Broker is a running in-process broker.
type Broker struct {
	Addr     string      // host:port it listens on
	Host     string      // name its certificate carries
	CertPath string      // its certificate, the only root a client needs
	Client   *tls.Config // trusts only the certificate and verifies Host
	server   *mochi.Server
	once     sync.Once
}

// Start runs a broker on 127.0.0.1 with a fresh certificate for host and
// closes it when the test ends.
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
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	ln := listeners.NewTCP(listeners.Config{
		ID:        "tls",
		Address:   "127.0.0.1:0",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{kp}},
	})
	if err := srv.AddListener(ln); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	b := &Broker{
		Addr:     ln.Address(),
		Host:     host,
		CertPath: pair.CertPath,
		Client:   &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12},
		server:   srv,
	}
	t.Cleanup(b.Close)
	return b
}

// Close stops the broker and drops every client. Calling it twice is safe.
func (b *Broker) Close() { b.once.Do(func() { _ = b.server.Close() }) }
