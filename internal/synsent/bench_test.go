package synsent

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// processCPU is this process's user + system CPU so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkWatchIdle reports the process's CPU per second of watching while
// this test makes no connection, with the watch and without it: cpu-µs/s.
// The watch's share is the difference; other processes' connections on the
// host add to it.
func BenchmarkWatchIdle(b *testing.B) {
	for _, watched := range []bool{false, true} {
		b.Run(map[bool]string{false: "none", true: "watch"}[watched], func(b *testing.B) {
			if watched {
				w, err := Start(b.Context(), func() []netip.AddrPort { return nil })
				if err != nil {
					b.Skip(err)
				}
				defer w.Stop()
			}
			const slice = 10 * time.Millisecond
			cpu0, t0 := processCPU(b), time.Now()
			for b.Loop() {
				time.Sleep(slice)
			}
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/time.Since(t0).Seconds(), "cpu-µs/s")
		})
	}
}

// BenchmarkWatchConnections makes loopback connections toward a watched
// address, with the watch and without it: the difference in cpu-µs/conn is
// the watch's cost per connection (each makes three events: new, answered,
// closed).
func BenchmarkWatchConnections(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := netip.MustParseAddrPort(ln.Addr().String())
	for _, watched := range []bool{false, true} {
		b.Run(map[bool]string{false: "none", true: "watch"}[watched], func(b *testing.B) {
			if watched {
				w, err := Start(b.Context(), func() []netip.AddrPort { return []netip.AddrPort{addr} })
				if err != nil {
					b.Skip(err)
				}
				defer w.Stop()
			}
			cpu0 := processCPU(b)
			n := 0
			for b.Loop() {
				c, err := net.Dial("tcp4", addr.String())
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
				n++
			}
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(n), "cpu-µs/conn")
		})
	}
}
