package mttr

import (
	"bufio"
	"context"
	"fmt"
	"github.com/mttrlab/mttr/internal/bedcost"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/device"
)

// BenchmarkFleet runs one cycle with many devices against a broker in a
// child process (mochi, killed for the fault and started again) and
// reports this process's resident memory once the fleet is connected
// (after a GC that returns free memory to the OS) and its peak, the time
// to connect the fleet, the recovery (median and max over the devices; and when 50, 90,
// 99 and 100 % of them had recovered, as Storm defines it) and the
// broker's peak accepted connections per second, from the connect lines
// it logs; and the test bed's own cost over the cycle (mttr.BedCost: this
// process, which runs the devices, the broker, the host, the worst
// lateness) with the bed-bound verdict. The devices resume their TLS
// session on reconnect or make a full handshake. Run one size per process
// for a clean peak:
//
//	go test ./internal/mttr -run '^$' -bench 'Fleet/devices=1000/commands=on/resume=off$' -benchtime 1x
func BenchmarkFleet(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		for _, commands := range []string{"off", "on"} {
			for _, resume := range []string{"off", "on"} {
				b.Run(fmt.Sprintf("devices=%d/commands=%s/resume=%s", n, commands, resume), func(b *testing.B) {
					benchFleet(b, n, commands == "on", device.TLSPolicy{Resume: resume == "on"})
				})
			}
		}
	}
}

// benchMeter is the fleet benchmarks' meter of the test bed: this
// process, the broker child's process group, the host and the lateness
// probe, as the lab's meter reads them.
type benchMeter struct {
	probe  *bedcost.Probe
	broker *procFault
}

func (m benchMeter) Begin(context.Context) func(context.Context) BedCost {
	start, tool0 := time.Now(), bedcost.Self()
	host0, _ := bedcost.Host()
	m.probe.Take()
	return func(context.Context) BedCost {
		c := BedCost{Window: time.Since(start), Tool: bedcost.Self() - tool0, Broker: -1, Cores: bedcost.Cores(), Late: m.probe.Take()}
		if h, err := bedcost.Host(); err == nil {
			c.Host = h - host0
		}
		if m.broker.cmd != nil { // killed at the fault: the new one, since its start
			c.Broker = bedcost.Groups([]int{m.broker.cmd.Process.Pid})
		}
		return c
	}
}

// benchFleet is one BenchmarkFleet case: n devices, with commands sent to
// them every 2 s (the default MTTR_C2D_INTERVAL) or not, under a TLS
// policy.
func benchFleet(b *testing.B, n int, commands bool, policy device.TLSPolicy) {
	timings := device.Timings{
		KeepAlive: 15 * time.Second, PingTimeout: 10 * time.Second, ConnectTimeout: 30 * time.Second,
		MaxReconnectInterval: time.Second, ConnectRetryInterval: time.Second,
	}
	for b.Loop() {
		br := startProcBroker(b)
		devs, ver := configs(br.addr, br.tls, n, timings)
		for i := range devs {
			devs[i].TLS = policy.Apply(devs[i].TLS)
		}
		spec := FleetSpec{Devices: devs, Verifier: ver, Interval: 3 * time.Second}
		if commands {
			for i := range devs {
				devs[i].Resubscribe = true
			}
			spec.Cloud = ver
			spec.Cloud.Identity.DeviceID = CloudID("dev")
			spec.CommandInterval = 2 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		start := time.Now()
		fleet, err := Connect(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		connected := time.Since(start)
		debug.FreeOSMemory() // as BenchmarkPahoFloor does before it reads its connected RSS
		connectedRSS := currentRSS()
		profile(b, n)
		var got collected
		plan := Plan{Cycles: 1, KeepRunning: time.Second, KeepDead: time.Second, RecoveryTimeout: 2 * time.Minute, QoS: 1}
		meter := benchMeter{probe: bedcost.StartProbe(ctx, bedcost.ProbeInterval), broker: br}
		sum, err := Experiment{Plan: plan, Fault: br, Devices: fleet, Sink: got.sink, Progress: io.Discard, Bed: meter}.Run(ctx)
		meter.probe.Stop()
		if err != nil {
			b.Fatal(err)
		}
		fleet.Close()
		cancel()
		if len(got.rows) != n || sum.NotRecovered != 0 {
			b.Fatalf("%d rows for %d devices, %d not recovered", len(got.rows), n, sum.NotRecovered)
		}
		b.ReportMetric(connected.Seconds(), "connect-s")
		b.ReportMetric(connectedRSS, "connected-RSS-B")
		b.ReportMetric(summarize(sum.Recoveries).Median, "recovery-median-ms")
		b.ReportMetric(summarize(sum.Recoveries).Max, "recovery-max-ms")
		storm := Storm(got.rows)
		for _, q := range []struct {
			f    float64
			name string
		}{{0.5, "p50"}, {0.9, "p90"}, {0.99, "p99"}, {1, "p100"}} {
			if d, ok := storm.RecoveredBy(q.f); ok {
				b.ReportMetric(float64(d)/float64(time.Millisecond), "recovered-"+q.name+"-ms")
			}
		}
		bed := got.rows[0].Bed
		b.ReportMetric(100*bed.Share(bed.Tool), "bed-tool-%core")
		b.ReportMetric(100*bed.Share(bed.Broker), "bed-broker-%core")
		b.ReportMetric(100*bed.HostBusy(), "bed-host-%")
		b.ReportMetric(float64(bed.Late)/float64(time.Millisecond), "bed-late-ms")
		b.ReportMetric(float64(len(bed.Bound(DefaultBedLimits))), "bed-bound-reasons")
		b.Logf("%d devices, resume %v: test bed %s; bed-bound: %v", n, policy.Resume, bed, bed.Bound(DefaultBedLimits))
		healed := time.Unix(0, got.rows[0].HealedAt)
		b.ReportMetric(float64(br.log.acceptPeak(healed, time.Now())), "broker-accepts-peak/s")
		b.ReportMetric(summarize(afterConnack(got.rows, func(c Cycle) int64 { return c.FirstAckAt })).Median, "ack-after-connack-median-ms")
		if commands {
			b.ReportMetric(summarize(sum.Downstreams).Median, "downstream-median-ms")
			b.ReportMetric(summarize(afterConnack(got.rows, func(c Cycle) int64 { return c.FirstC2DAt })).Median, "c2d-after-connack-median-ms")
		}
	}
	b.ReportMetric(peakRSS(b), "peak-RSS-B")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines-after")
}

// profile writes heap and goroutine profiles of the connected fleet, and
// the runtime's memory statistics, to the directory MTTR_BENCH_PROFILE
// names (nothing when unset): where the memory of a fleet goes.
func profile(b *testing.B, n int) {
	dir := os.Getenv("MTTR_BENCH_PROFILE")
	if dir == "" {
		return
	}
	runtime.GC()
	for _, name := range []string{"heap", "goroutine"} {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", name, n)))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.Logf("%d devices: %d goroutines; heap in use %d MiB, stacks %d MiB, runtime total %d MiB (sys), RSS now %d MiB",
		n, runtime.NumGoroutine(), ms.HeapInuse>>20, ms.StackInuse>>20, ms.Sys>>20, int64(currentRSS())>>20)
}

// currentRSS reads VmRSS from /proc, in bytes.
func currentRSS() float64 { return procStatus("VmRSS:") }

// afterConnack is, per device-cycle, the time from the device's CONNACK
// to the event at(c): after the CONNACK the device has one round trip to
// make in either direction (a PUBLISH, or a SUBSCRIBE before the command
// can come), so what lies beyond it there is the bed's (the sender, the
// broker, the machine under a reconnecting fleet).
func afterConnack(rows []Cycle, at func(Cycle) int64) []time.Duration {
	var ds []time.Duration
	for _, c := range rows {
		if t := at(c); c.ReconnectedAt != 0 && t != 0 {
			ds = append(ds, time.Duration(t-c.ReconnectedAt))
		}
	}
	return ds
}

// peakRSS reads VmHWM, the process's peak resident set, from /proc, in
// bytes (benchstat shows them in MiB).
func peakRSS(b *testing.B) float64 {
	v := procStatus("VmHWM:")
	if v == 0 {
		b.Skip("no VmHWM in /proc/self/status")
	}
	return v
}

// procStatus reads a field of /proc/self/status in kB, as bytes; 0 when
// there is none.
func procStatus(field string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb * 1024
		}
	}
	return 0
}
