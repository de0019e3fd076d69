package mttr

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// BenchmarkPahoFloor connects n bare paho clients (TLS, the options
// BenchmarkFleet's devices use, nothing of ours around them: no custom
// dial, no events, no publishing) to the broker in a child process, then
// kills the broker, starts it again and waits until every client is back.
// It reports what any tool holding n paho v1.5 clients in one process
// pays: resident memory connected and at the peak of the reconnect, and
// per client the goroutines, their stacks and the heap in use. Beside
// BenchmarkFleet it tells the tool's share from paho's. One size per
// process for a clean peak:
//
//	go test ./internal/mttr -run '^$' -bench 'PahoFloor/clients=10000$' -benchtime 1x
func BenchmarkPahoFloor(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { benchPahoFloor(b, n) })
	}
}

func benchPahoFloor(b *testing.B, n int) {
	for b.Loop() {
		br := startProcBroker(b)
		var connects atomic.Int64
		up := make(chan struct{}, n)
		clients := make([]paho.Client, n)
		for i := range clients {
			opts := paho.NewClientOptions().
				AddBroker("tls://" + br.addr).
				SetTLSConfig(br.tls).
				SetClientID(DeviceID("floor", i)).
				SetProtocolVersion(4).
				SetKeepAlive(15 * time.Second).
				SetPingTimeout(10 * time.Second).
				SetConnectTimeout(30 * time.Second).
				SetMaxReconnectInterval(time.Second).
				SetConnectRetryInterval(time.Second).
				SetAutoReconnect(true).
				SetOrderMatters(false).
				SetOnConnectHandler(func(paho.Client) { connects.Add(1); up <- struct{}{} })
			clients[i] = paho.NewClient(opts)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		await := func(what string) {
			for range n {
				select {
				case <-up:
				case <-ctx.Done():
					b.Fatalf("%s: %d of %d clients connected", what, connects.Load()%int64(n), n)
				}
			}
		}
		start := time.Now()
		for _, c := range clients {
			c.Connect() // paho connects in its own goroutine; OnConnect counts it
		}
		await("connect")
		connected := time.Since(start)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		goroutines := runtime.NumGoroutine()
		rss := currentRSS()

		if _, err := br.Inject(ctx); err != nil {
			b.Fatal(err)
		}
		healed, err := br.Heal(ctx)
		if err != nil {
			b.Fatal(err)
		}
		await("reconnect")
		back := time.Since(healed)
		for _, c := range clients {
			c.Disconnect(0)
		}
		cancel()

		b.ReportMetric(connected.Seconds(), "connect-s")
		b.ReportMetric(back.Seconds(), "all-back-s")
		b.ReportMetric(rss, "connected-RSS-B")
		b.ReportMetric(float64(goroutines)/float64(n), "goroutines/client")
		b.ReportMetric(float64(ms.StackInuse)/float64(n), "stack-B/client")
		b.ReportMetric(float64(ms.HeapInuse)/float64(n), "heap-inuse-B/client")
	}
	b.ReportMetric(peakRSS(b), "peak-RSS-B")
}
