package broker_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/mqttprobe"
)

// BenchmarkDockerRestartPath stops and starts the broker once per
// iteration in each network namespace mode while a client knocks (a TCP
// connect and TLS handshake every 100 ms, each attempt on its own) from the
// moment the stop took effect until the broker answers, and reports the
// time from start returned to the first accepted CONNACK (p50 and max, in
// ms), from the broker's own "listening" log line to that CONNACK (the
// path's share, at the log's millisecond resolution), to the end of the first knock whose TLS handshake completed (what a
// device knocking at that pace would see), the longest single knock and
// what the knocks met. Run it with e.g.
//
//	MTTR_NODE_IMAGE=mttr-node:local go test ./internal/broker/ -run '^$' -bench DockerRestartPath -benchtime 15x
func BenchmarkDockerRestartPath(b *testing.B) {
	eng, img, tlsConf := image(b)
	for _, mode := range broker.NetNSModes {
		b.Run(mode, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
			defer cancel()
			spec, c := run(b, ctx, eng, img, tlsConf, mode)
			o, err := eng.NewOutage(ctx, broker.FaultStop, c, spec, c.Addr(), tlsConf)
			if err != nil {
				b.Fatal(err)
			}
			defer o.Close()
			var delays, paths, clients, longest []time.Duration
			seen := map[string]int{}
			for b.Loop() {
				if _, err := o.Inject(ctx); err != nil {
					b.Fatal(err)
				}
				k := startKnocking(ctx, c.Addr(), 100*time.Millisecond)
				k.await(ctx, 3) // the client has met the outage a few times
				started, err := o.Heal(ctx)
				if err != nil {
					b.Fatal(err)
				}
				ready, err := mqttprobe.Wait(ctx, c.Addr(), tlsConf, mqttprobe.ProbeInterval, nil)
				if err != nil {
					b.Fatal(err)
				}
				answered := k.answered(ctx)
				res := k.stop()
				listening, err := lastListening(ctx, eng, c.ID)
				if err != nil {
					b.Fatal(err)
				}
				delays = append(delays, ready.Sub(started))
				paths = append(paths, ready.Sub(listening))
				clients = append(clients, answered.Sub(started))
				var long time.Duration
				for _, r := range res {
					seen[r.seen]++
					long = max(long, r.took)
				}
				longest = append(longest, long)
			}
			slices.Sort(delays)
			slices.Sort(paths)
			slices.Sort(clients)
			slices.Sort(longest)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(ms(delays[len(delays)/2]), "p50-ms")
			b.ReportMetric(ms(delays[len(delays)-1]), "max-ms")
			b.ReportMetric(ms(paths[len(paths)/2]), "path-p50-ms")
			b.ReportMetric(ms(paths[len(paths)-1]), "path-max-ms")
			b.ReportMetric(ms(clients[len(clients)/2]), "knock-p50-ms")
			b.ReportMetric(ms(clients[len(clients)-1]), "knock-max-ms")
			b.ReportMetric(ms(longest[len(longest)-1]), "longest-knock-ms")
			var met []string
			for s, n := range seen {
				met = append(met, s+"="+strconv.Itoa(n))
			}
			slices.Sort(met)
			b.Logf("%s: start returned to CONNACK %v; broker listening to CONNACK %v; start returned to a knock's completed handshake %v; longest knock per cycle %v; knocks met %s",
				mode, round(delays), round(paths), round(clients), round(longest), strings.Join(met, " "))
		})
	}
}

// knocker connects to an address every interval, each attempt on its own,
// as a reconnecting client would.
type knocker struct {
	cancel context.CancelFunc // stops starting knocks; those under way finish
	wg     sync.WaitGroup
	mu     sync.Mutex
	res    []knockResult
	more   chan struct{} // a result arrived
}

type knockResult struct {
	seen string
	end  time.Time
	took time.Duration
}

func startKnocking(ctx context.Context, addr string, interval time.Duration) *knocker {
	tick, cancel := context.WithCancel(ctx)
	k := &knocker{cancel: cancel, more: make(chan struct{}, 1)}
	k.wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			k.wg.Go(func() {
				begin := time.Now()
				seen := knock(ctx, addr, 3*time.Second)
				end := time.Now()
				k.mu.Lock()
				k.res = append(k.res, knockResult{seen, end, end.Sub(begin)})
				k.mu.Unlock()
				select {
				case k.more <- struct{}{}:
				default:
				}
			})
			select {
			case <-t.C:
			case <-tick.Done():
				return
			}
		}
	})
	return k
}

// await returns once n knocks have ended, or ctx has.
func (k *knocker) await(ctx context.Context, n int) {
	k.wait(ctx, func(res []knockResult) bool { return len(res) >= n })
}

// answered returns when the first knock that completed a TLS handshake
// ended, once there is one (zero if ctx ends first).
func (k *knocker) answered(ctx context.Context) time.Time {
	var at time.Time
	k.wait(ctx, func(res []knockResult) bool {
		for _, r := range res {
			if r.seen == seenAnswered && (at.IsZero() || r.end.Before(at)) {
				at = r.end
			}
		}
		return !at.IsZero()
	})
	return at
}

func (k *knocker) wait(ctx context.Context, done func([]knockResult) bool) {
	for {
		k.mu.Lock()
		ok := done(k.res)
		k.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-k.more:
		case <-ctx.Done():
			return
		}
	}
}

// stop stops starting knocks, waits for those under way (each gives up
// after its own timeout) and returns what all of them met.
func (k *knocker) stop() []knockResult {
	k.cancel()
	k.wg.Wait()
	return k.res
}

// lastListening returns the time of the broker's last "listening" event.
func lastListening(ctx context.Context, eng *broker.Engine, id string) (time.Time, error) {
	logs, err := eng.Logs(ctx, id, 200)
	if err != nil {
		return time.Time{}, err
	}
	var at time.Time
	for line := range strings.Lines(logs) {
		if e, ok := brokerlog.Parse([]byte(line)); ok && e.Kind == brokerlog.Listening {
			at = e.At
		}
	}
	if at.IsZero() {
		return at, fmt.Errorf("broker %s logged no listening event", id)
	}
	return at, nil
}

func round(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
