package mqttprobe

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/mqtttest"
)

func TestConnectPacket(t *testing.T) {
	got := connectPacket("abc")
	want := []byte{0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 10, 0, 3, 'a', 'b', 'c'}
	if !bytes.Equal(got, want) {
		t.Errorf("connectPacket = % x, want % x", got, want)
	}
	long := connectPacket(strings.Repeat("x", 200)) // remaining length 212 needs two bytes
	if long[1] != 212%128|0x80 || long[2] != 1 {
		t.Errorf("remaining length bytes % x", long[1:3])
	}
}

func TestProbe(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := Probe(ctx, b.Addr, b.Client); err != nil {
		t.Fatalf("Probe on a live broker: %v", err)
	}
	wrong := b.Client.Clone()
	wrong.ServerName = "alohomora.net"
	if err := Probe(ctx, b.Addr, wrong); err == nil {
		t.Error("Probe verifying the wrong name succeeded")
	}
	at, err := Wait(ctx, b.Addr, b.Client, 10*time.Millisecond, nil)
	if err != nil || at.IsZero() {
		t.Errorf("Wait = %v, %v", at, err)
	}
	if _, err := Wait(ctx, b.Addr, wrong, 10*time.Millisecond, nil); err == nil {
		t.Error("Wait with a certificate error did not fail at once")
	}
}

func TestProbeSilentServer(t *testing.T) {
	// A listener that accepts and never answers: the probe must honour ctx.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	b := mqtttest.Start(t, "localhost")
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := Probe(ctx, ln.Addr().String(), b.Client); err == nil {
		t.Fatal("Probe on a silent server succeeded")
	}
}

func TestWaitStopsWhenNotAlive(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	addr := b.Addr
	b.Close()
	dead := errors.New("container exited")
	polls := 0
	alive := func() error {
		if polls++; polls == 3 {
			return dead
		}
		return nil
	}
	_, err := Wait(t.Context(), addr, b.Client, time.Millisecond, alive)
	if !errors.Is(err, dead) {
		t.Errorf("Wait = %v, want %v", err, dead)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	addr := b.Addr
	b.Close()
	ctx, cancel := context.WithCancel(t.Context())
	polls := 0
	alive := func() error {
		if polls++; polls == 2 {
			cancel()
		}
		return nil
	}
	if _, err := Wait(ctx, addr, b.Client, time.Millisecond, alive); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %v, want context.Canceled", err)
	}
}

// TestWaitReadyOverlapsStalledProbes puts a listener in front of the broker
// that swallows its first connection and relays the others: a probe that
// waited for the stalled attempt (2 s) would miss the 1.5 s deadline.
func TestWaitOverlapsStalledProbes(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for first := true; ; first = false {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { in.Close() })
			if first {
				continue // accepted, never answered
			}
			go func() {
				out, err := net.Dial("tcp", b.Addr)
				if err != nil {
					in.Close()
					return
				}
				t.Cleanup(func() { out.Close() })
				go io.Copy(out, in)
				io.Copy(in, out)
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	if _, err := Wait(ctx, ln.Addr().String(), b.Client, ProbeInterval, nil); err != nil {
		t.Fatalf("WaitReady behind a stalled first connection: %v", err)
	}
}

// TestWaitOffersX25519 guards that the readiness probe, which runs every
// few milliseconds, offers the classic X25519 key share whatever the
// configuration it is given, and leaves that configuration alone.
func TestWaitOffersX25519(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	var mu sync.Mutex // probes run in parallel
	var curves []tls.CurveID
	seen := b.Client.Clone()
	seen.VerifyConnection = func(cs tls.ConnectionState) error {
		mu.Lock()
		defer mu.Unlock()
		curves = append(curves, cs.CurveID)
		return nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := Wait(ctx, b.Addr, seen, 10*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(curves) == 0 || slices.ContainsFunc(curves, func(c tls.CurveID) bool { return c != tls.X25519 }) {
		t.Errorf("probe handshakes used %v, want X25519 only", curves)
	}
	if seen.CurvePreferences != nil {
		t.Errorf("Wait changed its caller's configuration: %v", seen.CurvePreferences)
	}
}
