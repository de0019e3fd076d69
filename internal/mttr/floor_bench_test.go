package mttr

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// BenchmarkPahoFloor connects n bare paho clients (TLS, the session and
// timing options BenchmarkFleet's devices use, connectParallel at a time
// as a fleet connects, nothing of ours around them: no custom dial, no
// events, no publishing) to the broker in a child process, then kills the
// broker, starts it again and waits until every client is back. It reports
// what any tool holding n paho v1.5 clients in one process pays: resident
// memory once connected (after a GC that returns free memory to the OS)
// and the process's peak, and per client the goroutines, their stacks and
// the heap in use. Beside BenchmarkFleet it tells the tool's share from
// paho's. One size per process for a clean peak:
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
		// Each client says when it connects in a round (the first connect,
		// then the reconnect), once however often it connects in that round.
		var round atomic.Int64
		seen := make([]atomic.Int64, n)
		up := make(chan struct{}, n)
		clients := make([]paho.Client, n)
		for i := range clients {
			opts := paho.NewClientOptions().
				AddBroker("tls://" + br.addr).
				SetTLSConfig(br.tls).
				SetClientID(DeviceID("floor", i)).
				SetUsername("floor").
				SetPassword("floor").
				SetProtocolVersion(4).
				SetCleanSession(false).
				SetKeepAlive(15 * time.Second).
				SetPingTimeout(10 * time.Second).
				SetConnectTimeout(30 * time.Second).
				SetMaxReconnectInterval(time.Second).
				SetConnectRetryInterval(time.Second).
				SetConnectRetry(true). // a first connect that fails is tried again, as a device's is
				SetAutoReconnect(true).
				SetOrderMatters(false).
				SetOnConnectHandler(func(paho.Client) {
					if r := round.Load(); seen[i].Swap(r) != r {
						up <- struct{}{}
					}
				})
			clients[i] = paho.NewClient(opts)
		}
		b.Cleanup(func() {
			for _, c := range clients {
				c.Disconnect(0)
			}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		await := func(what string) {
			for got := range n {
				select {
				case <-up:
				case <-ctx.Done():
					b.Fatalf("%s: %d of %d clients connected", what, got, n)
				}
			}
		}
		round.Store(1)
		start := time.Now()
		var wg sync.WaitGroup
		sem := make(chan struct{}, connectParallel)
		for _, c := range clients {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				c.Connect().WaitTimeout(time.Minute)
			})
		}
		await("connect")
		connected := time.Since(start)
		wg.Wait()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		goroutines := runtime.NumGoroutine()
		rss := currentRSS()

		if _, err := br.Inject(ctx); err != nil {
			b.Fatal(err)
		}
		round.Store(2)
		healed, err := br.Heal(ctx)
		if err != nil {
			b.Fatal(err)
		}
		await("reconnect")
		back := time.Since(healed)

		b.ReportMetric(connected.Seconds(), "connect-s")
		b.ReportMetric(back.Seconds(), "all-back-s")
		b.ReportMetric(rss, "connected-RSS-B")
		b.ReportMetric(float64(goroutines)/float64(n), "goroutines/client")
		b.ReportMetric(float64(ms.StackInuse)/float64(n), "stack-B/client")
		b.ReportMetric(float64(ms.HeapInuse)/float64(n), "heap-inuse-B/client")
	}
	b.ReportMetric(peakRSS(b), "peak-RSS-B")
}
