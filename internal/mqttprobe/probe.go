// Package mqttprobe asks an MQTT broker whether it answers: a CONNECT over
// verified TLS that counts only when a CONNACK accepts it. It believes an
// open port proves nothing; only the protocol's own answer does. It knows
// nothing of Docker or of processes: callers say what "alive" means.
package mqttprobe

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mttrlab/mttr/internal/netfault"
)

// ProbeClientPrefix starts the client id of every readiness probe, so that
// broker-side logs can tell probes from devices.
const ProbeClientPrefix = "mttr-probe-"

// Probe dials addr over TLS (verified by tlsConf), sends an MQTT 3.1.1
// CONNECT with a fresh probe client id and returns nil only when the broker
// answers with a CONNACK that accepts it. It disconnects cleanly afterwards.
func Probe(ctx context.Context, addr string, tlsConf *tls.Config) error {
	return ProbeVia(ctx, nil, addr, tlsConf)
}

// ProbeVia is Probe over a TCP connection that dial opens (nil: from any
// local port).
func ProbeVia(ctx context.Context, dial netfault.Dial, addr string, tlsConf *tls.Config) error {
	conn, err := netfault.DialTLS(ctx, dial, addr, tlsConf)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := conn.Write(connectPacket(probeClientID())); err != nil {
		return fmt.Errorf("probe: send connect: %w", err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		return fmt.Errorf("probe: read connack: %w", err)
	}
	if ack[0] != 0x20 || ack[1] != 0x02 {
		return fmt.Errorf("probe: not a connack: % x", ack)
	}
	if ack[3] != 0 {
		return fmt.Errorf("probe: connack refused with return code %d", ack[3])
	}
	_, _ = conn.Write([]byte{0xE0, 0x00}) // DISCONNECT
	return nil
}

// probeTLS is the TLS configuration of a probe that runs every few
// milliseconds: tlsConf offering the classic X25519 key share only. The
// probe is the test bed's instrument, not the client under test, and a
// hybrid post-quantum share costs an ML-KEM key generation per attempt
// (half of the probe's CPU in a profile of a default run), including the
// attempts that a broker still down refuses after the ClientHello.
func probeTLS(tlsConf *tls.Config) *tls.Config {
	if tlsConf == nil {
		return nil
	}
	c := tlsConf.Clone()
	c.CurvePreferences = []tls.CurveID{tls.X25519}
	return c
}

func probeClientID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return ProbeClientPrefix + hex.EncodeToString(b[:])
}

// connectPacket encodes an MQTT 3.1.1 CONNECT with a clean session, a
// 10 s keep-alive and no credentials.
func connectPacket(clientID string) []byte {
	body := []byte{0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x0A}
	body = append(body, byte(len(clientID)>>8), byte(len(clientID)))
	body = append(body, clientID...)
	pkt := []byte{0x10}
	for n := len(body); ; {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		pkt = append(pkt, b)
		if n == 0 {
			break
		}
	}
	return append(pkt, body...)
}

// ProbeInterval is how often readiness is probed: well under the 10 ms
// resolution the timeline promises, since a probe's own round trip adds a
// few milliseconds.
const ProbeInterval = 5 * time.Millisecond

// maxProbes bounds the probes in flight at once.
const maxProbes = 8

// Wait starts a probe of addr every interval, without waiting for the
// previous one to give up, until one is accepted, ctx ends, or alive reports
// that the broker can no longer become ready (e.g. its container exited).
// Overlapping probes keep detection within one interval even when a single
// attempt stalls (a connection the engine's proxy accepted before the
// broker listened can take a SYN retransmission, about a second, to get
// through). It returns the time the first accepting CONNACK arrived.
func Wait(ctx context.Context, addr string, tlsConf *tls.Config, interval time.Duration, alive func() error) (time.Time, error) {
	return WaitVia(ctx, nil, addr, tlsConf, interval, alive)
}

// WaitVia is Wait with probes over connections that dial opens (nil: from
// any local port).
func WaitVia(ctx context.Context, dial netfault.Dial, addr string, tlsConf *tls.Config, interval time.Duration, alive func() error) (time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tlsConf = probeTLS(tlsConf)
	type result struct {
		at  time.Time
		err error
	}
	results := make(chan result, maxProbes)
	inflight := 0
	probe := func() {
		inflight++
		go func() {
			attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			err := ProbeVia(attempt, dial, addr, tlsConf)
			results <- result{time.Now(), err}
		}()
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	probe()
	var last error
	for {
		select {
		case r := <-results:
			inflight--
			if r.err == nil {
				return r.at, nil
			}
			last = r.err
			var certErr *tls.CertificateVerificationError
			if errors.As(r.err, &certErr) {
				return time.Time{}, fmt.Errorf("wait ready: %w", r.err)
			}
		case <-tick.C:
			if alive != nil {
				if err := alive(); err != nil {
					return time.Time{}, fmt.Errorf("wait ready: %w", err)
				}
			}
			if inflight < maxProbes {
				probe()
			}
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("wait ready: %w (last attempt: %v)", context.Cause(ctx), last)
		}
	}
}
