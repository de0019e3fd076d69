package mttr

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/aclements/go-moremath/stats"

	"github.com/mttrlab/mttr/internal/store"
)

// Summary is what a run measured so far.
type Summary struct {
	Cycles       int       // cycles completed
	Rows         int       // device-cycles
	Recoveries   []float64 // recovery_ms of every device-cycle that recovered
	Detections   []float64 // detection_ms where the device noticed the loss
	NotRecovered int
	Lost         int
	Duplicated   int
}

func (s *Summary) add(rows []store.Cycle) {
	s.Cycles++
	for _, r := range rows {
		s.Rows++
		s.Lost += r.Lost
		s.Duplicated += r.Duplicated
		if r.FirstAckAt == 0 || r.ReadyAt == 0 {
			s.NotRecovered++
		} else {
			s.Recoveries = append(s.Recoveries, millis(r.FirstAckAt-r.ReadyAt))
		}
		if r.LostAt != 0 && r.FaultAt != 0 {
			s.Detections = append(s.Detections, millis(r.LostAt-r.FaultAt))
		}
	}
}

func millis(ns int64) float64 { return float64(ns) / 1e6 }

// Stats are order statistics of a set of milliseconds.
type Stats struct {
	N                           int
	Mean, Median, P95, Min, Max float64
}

// Describe computes Stats of xs (which it does not modify).
func Describe(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := stats.Sample{Xs: slices.Sorted(slices.Values(xs)), Sorted: true}
	lo, hi := s.Bounds()
	return Stats{N: len(xs), Mean: s.Mean(), Median: s.Quantile(0.5), P95: s.Quantile(0.95), Min: lo, Max: hi}
}

// progress prints one line per cycle.
type progress struct {
	w     io.Writer
	plan  Plan
	start time.Time
}

func newProgress(w io.Writer, plan Plan) *progress {
	return &progress{w: w, plan: plan, start: time.Now()}
}

func (p *progress) cycle(n int, rows []store.Cycle, sum Summary) {
	var one Summary
	one.add(rows)
	rec, det := Describe(one.Recoveries), Describe(one.Detections)
	all := Describe(sum.Recoveries)
	elapsed := time.Since(p.start)
	eta := time.Duration(float64(elapsed) / float64(n) * float64(p.plan.Cycles-n)).Round(time.Second)
	fmt.Fprintf(p.w, "cycle %d/%d  recovery %s  detection %s  lost %d  not recovered %d  running median %s  ETA %s\n",
		n, p.plan.Cycles, fmtMs(rec), fmtMs(det), one.Lost, one.NotRecovered, fmtMs(all), eta)
}

func fmtMs(s Stats) string {
	if s.N == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f ms", round(s.Median))
}

// round rounds to whole milliseconds without printing "-0".
func round(ms float64) float64 {
	if r := math.Round(ms); r != 0 {
		return r
	}
	return 0
}

// Print writes the run's summary: recovery mean, median, p95 and max, how
// many device-cycles did not recover, and message loss.
func (s Summary) Print(w io.Writer) {
	r := Describe(s.Recoveries)
	fmt.Fprintf(w, "recovery over %d device-cycles: ", s.Rows)
	if r.N == 0 {
		fmt.Fprint(w, "none recovered")
	} else {
		fmt.Fprintf(w, "mean %.0f ms, median %.0f ms, p95 %.0f ms, max %.0f ms", round(r.Mean), round(r.Median), round(r.P95), round(r.Max))
	}
	fmt.Fprintf(w, "; not recovered %d; messages lost %d, duplicated %d\n", s.NotRecovered, s.Lost, s.Duplicated)
	if d := Describe(s.Detections); d.N > 0 {
		fmt.Fprintf(w, "detection: median %.0f ms over %d losses\n", round(d.Median), d.N)
	}
}
