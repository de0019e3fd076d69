package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/config"
	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/mqttprobe"
	"github.com/mttrlab/mttr/internal/store"
)

// BenchmarkDockerReadiness measures how late readiness detection is: from
// the moment the broker logs "listening" (millisecond resolution) to the
// CONNACK of our probe; and, for scale, from the engine starting the
// container to that CONNACK.
//
//	go test ./internal/lab -run '^$' -bench DockerReadiness -benchtime 10x
func BenchmarkDockerReadiness(b *testing.B) {
	eng := dockertest.Engine(b)
	l, _ := newLabTB(b, "localhost")
	buildTB(b, l)
	tlsConf, err := l.tlsConfig()
	if err != nil {
		b.Fatal(err)
	}
	var lags, starts []float64
	for b.Loop() {
		ctx := context.Background()
		c, err := eng.Run(ctx, broker.RunSpec{Name: l.Config.Container, Image: l.Config.Image, Bind: "127.0.0.1", Port: l.Config.Port})
		if err != nil {
			b.Fatal(err)
		}
		ready, err := eng.WaitReady(ctx, c, l.Config.BrokerAddr, tlsConf, mqttprobe.ProbeInterval)
		if err != nil {
			b.Fatal(err)
		}
		logs, err := eng.Logs(ctx, c.ID, 100)
		if err != nil {
			b.Fatal(err)
		}
		listening := eventTime(logs, "listening")
		if listening.IsZero() {
			b.Fatalf("no listening line in:\n%s", logs)
		}
		lags = append(lags, float64(ready.Sub(listening))/1e6)
		starts = append(starts, float64(ready.Sub(c.StartedAt))/1e6)
		if err := eng.Remove(ctx, c.Name); err != nil {
			b.Fatal(err)
		}
	}
	var sum, worst float64
	for _, v := range lags {
		sum += v
		worst = max(worst, v)
	}
	b.ReportMetric(sum/float64(len(lags)), "ready-lag-mean-ms")
	b.ReportMetric(worst, "ready-lag-max-ms")
	sum = 0
	for _, v := range starts {
		sum += v
	}
	b.ReportMetric(sum/float64(len(starts)), "start-to-ready-mean-ms")
}

// eventTime returns the ts of the first broker log line with event.
func eventTime(logs, event string) time.Time {
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var m struct {
			TS    int64  `json:"ts"`
			Event string `json:"event"`
		}
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.Event == event {
			return time.UnixMilli(m.TS)
		}
	}
	return time.Time{}
}

// firstCycle notes when the run line is printed, just before the first
// cycle starts.
type firstCycle struct {
	once sync.Once
	at   time.Time
}

func (f *firstCycle) Write(p []byte) (int, error) {
	if strings.HasPrefix(string(p), "run ") {
		f.once.Do(func() { f.at = time.Now() })
	}
	return len(p), nil
}

// BenchmarkDockerMttr runs an experiment with the default durations (5
// cycles of 10 s up and 7.5 s down) with the image present, and
// reports the time from calling Mttr to the first cycle starting, and the
// run's wall time over the sum of its configured durations plus the
// recoveries (from healing to the last device's first PUBACK).
//
//	go test ./internal/lab -run '^$' -bench DockerMttr -benchtime 1x
func BenchmarkDockerMttr(b *testing.B) {
	dockertest.Engine(b)
	base, _ := newLabTB(b, "localhost")
	buildTB(b, base)
	for b.Loop() {
		l := shortRunTB(b, base, "stop")
		l.Config.RestartCount = config.Defaults.RestartCount
		l.Config.KeepRunning = config.Defaults.KeepRunning
		l.Config.KeepDead = 7500 * time.Millisecond
		l.Config.SendInterval = config.Defaults.SendInterval
		fc := &firstCycle{}
		l.Out = fc
		start := time.Now()
		id, err := l.Mttr(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		wall := time.Since(start)
		db, err := store.OpenReadOnly(context.Background(), l.Config.DB)
		if err != nil {
			b.Fatal(err)
		}
		rows, err := db.Cycles(context.Background(), id)
		db.Close()
		if err != nil {
			b.Fatal(err)
		}
		expected := time.Duration(l.Config.RestartCount) * (l.Config.KeepRunning + l.Config.KeepDead)
		recovery := map[int]time.Duration{}
		for _, r := range rows {
			recovery[r.Cycle] = max(recovery[r.Cycle], time.Duration(r.FirstAckAt-r.HealedAt))
		}
		for _, d := range recovery {
			expected += d
		}
		b.ReportMetric(fc.at.Sub(start).Seconds(), "to-first-cycle-s")
		b.ReportMetric(wall.Seconds()/expected.Seconds(), "wall/planned+recovery")
		b.ReportMetric(wall.Seconds(), "wall-s")
	}
}
