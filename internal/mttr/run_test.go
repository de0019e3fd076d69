package mttr

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/device"
	"github.com/mttrlab/mttr/internal/mqttprobe"
	"github.com/mttrlab/mttr/internal/mqtttest"
)

// stopFault closes the in-process broker (listener and every connection)
// and starts it again on the same port.
type stopFault struct {
	b    *mqtttest.Broker
	addr string
	tls  *tls.Config
}

func (f *stopFault) Inject(context.Context) (time.Time, error) { f.b.Close(); return time.Now(), nil }
func (f *stopFault) Heal(context.Context) (time.Time, error) {
	err := f.b.Restart()
	return time.Now(), err
}
func (f *stopFault) Ready(ctx context.Context) (time.Time, error) {
	return mqttprobe.Wait(ctx, f.addr, f.tls, 10*time.Millisecond, nil)
}

// pauseFault freezes traffic through a proxy: connections stay open, the
// broker stops answering.
type pauseFault struct {
	p   *mqtttest.Proxy
	tls *tls.Config
}

func (f *pauseFault) Inject(context.Context) (time.Time, error) { f.p.Pause(); return time.Now(), nil }
func (f *pauseFault) Heal(context.Context) (time.Time, error)   { f.p.Resume(); return time.Now(), nil }
func (f *pauseFault) Ready(ctx context.Context) (time.Time, error) {
	return mqttprobe.Wait(ctx, f.p.Addr, f.tls, 10*time.Millisecond, nil)
}

// deadFault never comes back.
type deadFault struct{ stopFault }

func (f *deadFault) Heal(context.Context) (time.Time, error) { return time.Now(), nil }

var fastTimings = device.Timings{
	KeepAlive: 2 * time.Second, PingTimeout: 500 * time.Millisecond, ConnectTimeout: time.Second,
	MaxReconnectInterval: 50 * time.Millisecond, ConnectRetryInterval: 50 * time.Millisecond,
}

func configs(addr string, tlsConf *tls.Config, n int, timings device.Timings) ([]device.Config, device.Config) {
	mk := func(id string) device.Config {
		return device.Config{
			Identity:   device.Identity{HostName: "localhost", DeviceID: id, SharedAccessKey: "Zm9vYmFy"},
			BrokerAddr: addr, TLS: tlsConf, Timings: timings, QoS: 1,
		}
	}
	devs := make([]device.Config, n)
	for i := range devs {
		devs[i] = mk(DeviceID("dev", i))
	}
	return devs, Verifier(mk("dev-verifier"))
}

func connect(t *testing.T, addr string, tlsConf *tls.Config, n int, timings device.Timings, interval time.Duration) *Fleet {
	t.Helper()
	devs, ver := configs(addr, tlsConf, n, timings)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	f, err := Connect(ctx, FleetSpec{Devices: devs, Verifier: ver, Interval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

type collected struct {
	mu   sync.Mutex
	rows []Cycle
}

func (c *collected) sink(_ context.Context, rows []Cycle) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rows = append(c.rows, rows...)
	return nil
}

func runCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// checkOrder asserts fault_at ≤ healed_at, fault_at < ready_at ≤
// first_ack_at, and a reconnect between the fault and the first ack. (A
// frozen broker can answer a moment before the call that thawed it
// returns, so ready_at may come before healed_at.)
func checkOrder(t *testing.T, r Cycle) {
	t.Helper()
	if !(r.FaultAt > 0 && r.FaultAt <= r.HealedAt && r.FaultAt < r.ReadyAt && r.ReadyAt <= r.FirstAckAt) {
		t.Errorf("cycle %d %s out of order: fault %d healed %d ready %d first ack %d",
			r.Cycle, r.Device, r.FaultAt, r.HealedAt, r.ReadyAt, r.FirstAckAt)
	}
	if r.ReconnectedAt != 0 && (r.ReconnectedAt < r.FaultAt || r.ReconnectedAt > r.FirstAckAt) {
		t.Errorf("cycle %d %s reconnected %d outside (fault %d, first ack %d]", r.Cycle, r.Device, r.ReconnectedAt, r.FaultAt, r.FirstAckAt)
	}
}

func TestRunStopLikeFault(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	fleet := connect(t, b.Addr, b.Client, 3, fastTimings, 100*time.Millisecond)
	var got collected
	plan := Plan{Cycles: 2, KeepRunning: 300 * time.Millisecond, KeepDead: 300 * time.Millisecond, RecoveryTimeout: 10 * time.Second, QoS: 1}
	var out strings.Builder
	sum, err := Experiment{Plan: plan, Fault: &stopFault{b: b, addr: b.Addr, tls: b.Client}, Devices: fleet, Sink: got.sink, Progress: &out}.Run(runCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.rows) != 6 || sum.Cycles != 2 || sum.Rows != 6 || sum.NotRecovered != 0 {
		t.Fatalf("rows %d, summary %+v", len(got.rows), sum)
	}
	for _, r := range got.rows {
		checkOrder(t, r)
		if r.LostAt == 0 || r.ReconnectedAt == 0 {
			t.Errorf("cycle %d %s: lost %d reconnected %d; a closed broker must be noticed", r.Cycle, r.Device, r.LostAt, r.ReconnectedAt)
		}
		if r.LastAckBeforeAt == 0 || r.LastAckBeforeAt > r.FaultAt {
			t.Errorf("cycle %d %s: last ack before %d, fault %d", r.Cycle, r.Device, r.LastAckBeforeAt, r.FaultAt)
		}
		if r.Error != "" {
			t.Errorf("cycle %d %s: error %q", r.Cycle, r.Device, r.Error)
		}
		// Messages published in cycle 2 before its fault reach the verifier
		// only if it came back after cycle 1. (A message in flight when the
		// broker closed may go unacknowledged, so acknowledged can be short.)
		if r.Published == 0 || r.Delivered == 0 || r.Acknowledged+r.Delivered+r.Lost < r.Published {
			t.Errorf("cycle %d %s counters: %+v", r.Cycle, r.Device, r)
		}
	}
	if got.rows[0].Device != "dev" || got.rows[1].Device != "dev-2" || got.rows[2].Device != "dev-3" {
		t.Errorf("device order %s %s %s", got.rows[0].Device, got.rows[1].Device, got.rows[2].Device)
	}
	n := 0
	for line := range strings.Lines(out.String()) {
		if strings.HasPrefix(line, "cycle ") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("progress printed %d cycle lines:\n%s", n, out.String())
	}
}

// runPause runs plan with a pause-like fault: a proxy in front of the
// broker that freezes traffic.
func runPause(t *testing.T, devices int, timings device.Timings, interval time.Duration, plan Plan) []Cycle {
	t.Helper()
	b := mqtttest.Start(t, "localhost")
	p := mqtttest.NewProxy(t, b.Addr)
	fleet := connect(t, p.Addr, b.Client, devices, timings, interval)
	var got collected
	if _, err := (Experiment{Plan: plan, Fault: &pauseFault{p: p, tls: b.Client}, Devices: fleet, Sink: got.sink}).Run(runCtx(t)); err != nil {
		t.Fatal(err)
	}
	if len(got.rows) != devices*plan.Cycles {
		t.Fatalf("%d rows, want %d", len(got.rows), devices*plan.Cycles)
	}
	return got.rows
}

func TestRunPauseShorterThanKeepAlive(t *testing.T) {
	timings := fastTimings
	timings.KeepAlive = 5 * time.Second
	plan := Plan{Cycles: 2, KeepRunning: 300 * time.Millisecond, KeepDead: 500 * time.Millisecond, RecoveryTimeout: 10 * time.Second, QoS: 1}
	for _, r := range runPause(t, 2, timings, 100*time.Millisecond, plan) {
		checkOrder(t, r)
		if r.LostAt != 0 || r.ReconnectedAt != 0 {
			t.Errorf("cycle %d %s: a pause shorter than keep-alive was noticed (lost %d, reconnected %d)", r.Cycle, r.Device, r.LostAt, r.ReconnectedAt)
		}
		if r.Lost != 0 || r.Acknowledged != r.Published || r.Delivered != r.Published {
			t.Errorf("cycle %d %s lost QoS 1 messages: %+v", r.Cycle, r.Device, r)
		}
	}
}

func TestRunPauseLongerThanKeepAlive(t *testing.T) {
	timings := fastTimings
	timings.KeepAlive = time.Second
	timings.PingTimeout = 300 * time.Millisecond
	plan := Plan{Cycles: 1, KeepRunning: 200 * time.Millisecond, KeepDead: 2500 * time.Millisecond, RecoveryTimeout: 10 * time.Second, QoS: 1}
	r := runPause(t, 1, timings, 200*time.Millisecond, plan)[0]
	checkOrder(t, r)
	if r.LostAt == 0 || r.LostAt < r.FaultAt || r.LostAt > r.HealedAt {
		t.Errorf("keep-alive detection: lost %d, want within [fault %d, healed %d]", r.LostAt, r.FaultAt, r.HealedAt)
	}
}

func TestRunRecoveryTimeout(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	fleet := connect(t, b.Addr, b.Client, 2, fastTimings, 100*time.Millisecond)
	var got collected
	// The verifier never comes back either: each cycle settles for
	// SettleTimeout in vain, which this test has no use for.
	plan := Plan{Cycles: 2, KeepRunning: 100 * time.Millisecond, KeepDead: 100 * time.Millisecond, RecoveryTimeout: 500 * time.Millisecond,
		SettleTimeout: 100 * time.Millisecond, QoS: 1}
	f := &deadFault{stopFault{b: b, addr: b.Addr, tls: b.Client}}
	_, err := Experiment{Plan: plan, Fault: f, Devices: fleet, Sink: got.sink, Progress: io.Discard}.Run(runCtx(t))
	if err != nil {
		t.Fatalf("a broker that never returns must not fail the run: %v", err)
	}
	if len(got.rows) != 4 {
		t.Fatalf("%d rows, want 4", len(got.rows))
	}
	for _, r := range got.rows {
		if r.FirstAckAt != 0 || r.ReadyAt != 0 || !strings.HasPrefix(r.Error, "not recovered within") {
			t.Errorf("cycle %d %s: %+v", r.Cycle, r.Device, r)
		}
	}
}

func TestRunInterrupted(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	fleet := connect(t, b.Addr, b.Client, 1, fastTimings, 100*time.Millisecond)
	var got collected
	ctx, cancel := context.WithCancel(runCtx(t))
	f := &stopFault{b: b, addr: b.Addr, tls: b.Client}
	plan := Plan{Cycles: 5, KeepRunning: 100 * time.Millisecond, KeepDead: 200 * time.Millisecond, RecoveryTimeout: 10 * time.Second, QoS: 1}
	// Interrupt during the second cycle's outage.
	inject := 0
	wrapped := &hookFault{Fault: f, afterInject: func() {
		if inject++; inject == 2 {
			cancel()
		}
	}}
	sum, err := Experiment{Plan: plan, Fault: wrapped, Devices: fleet, Sink: got.sink, Progress: io.Discard}.Run(ctx)
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Run = %v, want ErrInterrupted", err)
	}
	if sum.Cycles != 2 || len(got.rows) != 2 || got.rows[0].Error != "" || got.rows[1].Error != "interrupted before healing" {
		t.Fatalf("summary %+v rows %+v", sum, got.rows)
	}
	// The cut-short cycle is marked and counts in nothing: not as "not
	// recovered", not as lost messages.
	if got.rows[0].Interrupted || !got.rows[1].Interrupted || sum.Interrupted != 1 || sum.Rows != 1 || sum.NotRecovered != 0 {
		t.Errorf("interrupted %v %v, summary %+v", got.rows[0].Interrupted, got.rows[1].Interrupted, sum)
	}
	// Nothing is started once the run was told to stop: the broker stays
	// down for whoever removes it.
	if wrapped.heals != 1 {
		t.Errorf("%d heals, want 1 (the first cycle's only)", wrapped.heals)
	}
	pctx, pcancel := context.WithTimeout(runCtx(t), 300*time.Millisecond)
	defer pcancel()
	if err := mqttprobe.Probe(pctx, b.Addr, b.Client); err == nil {
		t.Error("the broker was brought back after the interrupt")
	}
}

type hookFault struct {
	Fault
	afterInject func()
	heals       int
}

func (h *hookFault) Inject(ctx context.Context) (time.Time, error) {
	at, err := h.Fault.Inject(ctx)
	h.afterInject()
	return at, err
}

func (h *hookFault) Heal(ctx context.Context) (time.Time, error) {
	h.heals++
	return h.Fault.Heal(ctx)
}

func TestRunFailingFault(t *testing.T) {
	b := mqtttest.Start(t, "localhost")
	fleet := connect(t, b.Addr, b.Client, 1, fastTimings, 100*time.Millisecond)
	var got collected
	gone := errors.New("engine gone")
	f := &failFault{stopFault: stopFault{b: b, addr: b.Addr, tls: b.Client}, failHeal: 2, err: gone}
	plan := Plan{Cycles: 3, KeepRunning: 100 * time.Millisecond, KeepDead: 100 * time.Millisecond, RecoveryTimeout: 10 * time.Second, QoS: 1}
	_, err := Experiment{Plan: plan, Fault: f, Devices: fleet, Sink: got.sink, Progress: io.Discard}.Run(runCtx(t))
	if !errors.Is(err, gone) {
		t.Fatalf("Run = %v, want %v", err, gone)
	}
	if len(got.rows) != 2 || got.rows[0].Error != "" || !strings.Contains(got.rows[1].Error, "engine gone") {
		t.Fatalf("rows %+v", got.rows)
	}
}

type failFault struct {
	stopFault
	failHeal, heals int
	err             error
}

func (f *failFault) Heal(ctx context.Context) (time.Time, error) {
	if f.heals++; f.heals == f.failHeal {
		return time.Time{}, f.err
	}
	return f.stopFault.Heal(ctx)
}

func TestDeviceID(t *testing.T) {
	for i, want := range []string{"d", "d-2", "d-3"} {
		if got := DeviceID("d", i); got != want {
			t.Errorf("DeviceID(d, %d) = %q, want %q", i, got, want)
		}
	}
	if compareDevice("d-10", "d-9") <= 0 || compareDevice("d", "d-2") >= 0 {
		t.Error("compareDevice does not order numerically")
	}
	_ = fmt.Sprint()
}

// TestUpTimeJitter draws up times with MTTR_KEEP_RUNNING_JITTER: each lies
// in KeepRunning ± jitter, and they spread over that range (1000 draws
// miss its outer tenths with probability 2 × 0.9^1000).
func TestUpTimeJitter(t *testing.T) {
	p := Plan{KeepRunning: time.Second, KeepRunningJitter: 500 * time.Millisecond}
	lo, hi := time.Hour, time.Duration(0)
	for range 1000 {
		d := p.upTime()
		if d < 500*time.Millisecond || d > 1500*time.Millisecond {
			t.Fatalf("up time %v outside 1s ± 500ms", d)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo > 600*time.Millisecond || hi < 1400*time.Millisecond {
		t.Errorf("up times spread over [%v, %v] only", lo, hi)
	}
	if d := (Plan{KeepRunning: time.Second}).upTime(); d != time.Second {
		t.Errorf("no jitter: up time %v", d)
	}
}

// TestSummaryPrint checks the end-of-run summary against golden files: a
// run whose every device-cycle recovered, and one where most did not,
// whose statistics must say they are of the few that did.
func TestSummaryPrint(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		s    Summary
	}{
		{"summary-all.txt", Summary{Cycles: 2, Rows: 4, Recoveries: ms(500, 520, 540, 560), Detections: ms(1, 1, 2, 2)}},
		{"summary-few.txt", Summary{Cycles: 1, Rows: 10, Recoveries: ms(4000, 4400, 5000), Downstreams: ms(1500, 1600, 1700),
			NotRecovered: 7, Lost: 120, C2DLost: 30}},
	} {
		var b bytes.Buffer
		tc.s.Print(&b)
		path := filepath.Join("testdata", tc.name)
		if *updateGolden {
			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update to create it)", err)
		}
		if b.String() != string(want) {
			t.Errorf("%s:\n%s\nwant\n%s", tc.name, b.String(), want)
		}
	}
}

var updateGolden = flag.Bool("update", false, "rewrite the golden files")
