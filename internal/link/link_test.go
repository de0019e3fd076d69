package link

import (
	"bufio"
	"context"
	"io"
	"net"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2/toxics"

	"github.com/mttrlab/mttr/internal/netfault"
)

// echo serves a line echo on loopback until the test ends.
func echo(t testing.TB) string {
	t.Helper()
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
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends one line on c and reads it back.
func roundTrip(t testing.TB, c net.Conn, r *bufio.Reader) time.Duration {
	t.Helper()
	begin := time.Now()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	return time.Since(begin)
}

func dial(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func (l *Link) toxicNames() []string {
	var names []string
	for _, t := range l.proxy.Toxics.GetToxicArray() {
		names = append(names, t.(*toxics.ToxicWrapper).Name)
	}
	sort.Strings(names)
	return names
}

// A link's latency delays each way, the fault's adds to the run's, and
// Heal leaves the run's alone.
func TestLinkLatency(t *testing.T) {
	const base, fault = 20 * time.Millisecond, 60 * time.Millisecond
	l, err := Start("127.0.0.1:0", echo(t), netfault.Link{Latency: base})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, r := dial(t, l.Addr())
	// A round trip crosses the link twice: each way gets the latency.
	if rtt := roundTrip(t, c, r); rtt < 2*base {
		t.Errorf("round trip on a %v link took %v, want ≥ %v", base, rtt, 2*base)
	}
	if err := l.Fault(netfault.Link{Latency: fault}); err != nil {
		t.Fatal(err)
	}
	if rtt := roundTrip(t, c, r); rtt < 2*(base+fault) {
		t.Errorf("round trip during a %v fault on a %v link took %v, want ≥ %v", fault, base, rtt, 2*(base+fault))
	}
	if err := l.Heal(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"run_latency_downstream", "run_latency_upstream"}
	if got := l.toxicNames(); !slices.Equal(got, want) {
		t.Errorf("toxics after Heal = %v, want %v", got, want)
	}
	// Data still flows after the heal, through the run's latency.
	if rtt := roundTrip(t, c, r); rtt < 2*base {
		t.Errorf("round trip after the heal took %v, want ≥ %v", rtt, 2*base)
	}
}

// A rate limit bounds how fast a large write arrives.
func TestLinkBandwidth(t *testing.T) {
	l, err := Start("127.0.0.1:0", echo(t), netfault.Link{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const rate = 16_000 // bytes/s
	if err := l.Fault(netfault.Link{Rate: rate}); err != nil {
		t.Fatal(err)
	}
	if got := l.toxicNames(); len(got) != 2 {
		t.Fatalf("toxics during the fault = %v, want one each way", got)
	}
	c, _ := dial(t, l.Addr())
	const n = 8_000 // half a second at the rate, each way
	begin := time.Now()
	go c.Write(make([]byte, n))
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	// Each direction holds the data to the rate; the two overlap, so the
	// bound is one direction's time, less one second's burst it may allow.
	if took, min := time.Since(begin), time.Duration(n)*time.Second/rate-100*time.Millisecond; took < min {
		t.Errorf("%d bytes at %d B/s arrived in %v, want ≥ %v", n, rate, took, min)
	}
	if err := l.Heal(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := l.toxicNames(); len(got) != 0 {
		t.Errorf("toxics after Heal = %v, want none", got)
	}
}

// Close ends the connections the link carried.
func TestLinkClose(t *testing.T) {
	l, err := Start("127.0.0.1:0", echo(t), netfault.Link{})
	if err != nil {
		t.Fatal(err)
	}
	c, r := dial(t, l.Addr())
	roundTrip(t, c, r)
	l.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("a connection outlived its link's Close")
	}
	if _, err := net.Dial("tcp", l.Addr()); err == nil {
		t.Error("the link still accepts after Close")
	}
}

// BenchmarkLink is the latency the link adds to a message's round trip
// with no toxic: p50 and p99 over b.N round trips, through the link and
// straight to the same echo server.
func BenchmarkLink(b *testing.B) {
	upstream := echo(b)
	l, err := Start("127.0.0.1:0", upstream, netfault.Link{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	for _, bc := range []struct{ name, addr string }{{"path=direct", upstream}, {"path=link", l.Addr()}} {
		b.Run(bc.name, func(b *testing.B) {
			c, r := dial(b, bc.addr)
			rtts := make([]time.Duration, 0, b.N)
			for b.Loop() {
				rtts = append(rtts, roundTrip(b, c, r))
			}
			slices.Sort(rtts)
			b.ReportMetric(float64(rtts[len(rtts)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(rtts[len(rtts)*99/100].Microseconds()), "p99-µs")
		})
	}
}
