package broker_test

import (
	"context"
	"crypto/tls"
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
	"github.com/mttrlab/mttr/internal/stats"
)

// BenchmarkDockerRestartPath stops and starts the broker once per
// iteration, in each network namespace mode, with and without a client
// knocking (a TCP connect and TLS handshake every 100 ms, each attempt on
// its own) from the moment the stop took effect until the broker answers.
// It reports path_ms as the experiment defines it, from the broker's own
// "listening" line to our probe's first accepted CONNACK (p50, p95, max),
// the time from start returned to that CONNACK, and with knocking the
// longest single knock and what the knocks met. Run one mode per process,
// e.g.
//
//	MTTR_NODE_IMAGE=mttr-node:local go test ./internal/broker/ -run '^$' -bench 'DockerRestartPath/plain/knock' -benchtime 30x
func BenchmarkDockerRestartPath(b *testing.B) {
	eng, img, tlsConf := image(b)
	for _, mode := range broker.NetNSModes {
		for _, knocking := range []bool{true, false} {
			name := mode + "/quiet"
			if knocking {
				name = mode + "/knock"
			}
			b.Run(name, func(b *testing.B) { restartPath(b, eng, img, tlsConf, mode, knocking) })
		}
	}
}

func restartPath(b *testing.B, eng *broker.Engine, img string, tlsConf *tls.Config, mode string, knocking bool) {
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()
	spec, c := run(b, ctx, eng, img, tlsConf, mode)
	o, err := eng.NewOutage(ctx, broker.FaultStop, c, spec, c.Addr(), tlsConf)
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	var delays, paths, longest []time.Duration
	seen := map[string]int{}
	for b.Loop() {
		if _, err := o.Inject(ctx); err != nil {
			b.Fatal(err)
		}
		var k *knocker
		if knocking {
			k = startKnocking(ctx, c.Addr(), 100*time.Millisecond)
			k.await(ctx, 3) // the client has met the outage a few times
		}
		started, err := o.Heal(ctx)
		if err != nil {
			b.Fatal(err)
		}
		ready, err := mqttprobe.Wait(ctx, c.Addr(), tlsConf, mqttprobe.ProbeInterval, nil)
		if err != nil {
			b.Fatal(err)
		}
		if k != nil {
			k.answered(ctx)
			var long time.Duration
			for _, r := range k.stop() {
				seen[r.seen]++
				long = max(long, r.took)
			}
			longest = append(longest, long)
		}
		listening, err := lastListening(ctx, eng, c.ID)
		if err != nil {
			b.Fatal(err)
		}
		delays = append(delays, ready.Sub(started))
		paths = append(paths, ready.Sub(listening))
	}
	path, delay := stats.Summarize(stats.Millis(paths)), stats.Summarize(stats.Millis(delays))
	b.ReportMetric(path.Median, "path-p50-ms")
	b.ReportMetric(path.P95, "path-p95-ms")
	b.ReportMetric(path.Max, "path-max-ms")
	b.ReportMetric(delay.Median, "start-to-ready-p50-ms")
	b.ReportMetric(delay.Max, "start-to-ready-max-ms")
	if knocking {
		b.ReportMetric(stats.Summarize(stats.Millis(longest)).Max, "longest-knock-ms")
	}
	var met []string
	for s, n := range seen {
		met = append(met, s+"="+strconv.Itoa(n))
	}
	slices.Sort(met)
	b.Logf("%s knocking=%v: path %v; start returned to CONNACK %v; longest knock per cycle %v; knocks met %s",
		mode, knocking, round(paths), round(delays), round(longest), strings.Join(met, " "))
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
