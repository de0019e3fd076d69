package mttr

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/mttrlab/mttr/internal/stats"
)

// Summary is what a run measured so far: its device-cycles' durations, as
// the Cycle methods define them, and its counters.
type Summary struct {
	Cycles       int             // cycles completed
	Rows         int             // device-cycles
	Recoveries   []time.Duration // of every device-cycle whose upstream recovered
	Downstreams  []time.Duration // of every device-cycle that listens and received a command again
	Detections   []time.Duration // where the device noticed the loss
	Paths        []time.Duration // where the broker's own moment is known
	NotRecovered int             // device-cycles of which either direction did not come back
	Deaf         int             // of those, upstream back and downstream not
	Lost         int
	Duplicated   int
	C2DLost      int
	Interrupted  int     // device-cycles cut short by an interrupt, counted in nothing else
	CutShort     int     // cycles stored with rows the interrupt cut short
	Bed          BedCost // the test bed's cost over every cycle's window
	BedBound     int     // cycles whose measurement the bed bound (DefaultBedLimits)
}

func (s *Summary) add(rows []Cycle) {
	s.Cycles++
	if slices.ContainsFunc(rows, func(r Cycle) bool { return !r.Counts() }) {
		s.CutShort++
	}
	if len(rows) > 0 && rows[0].Bed.Measured() {
		s.Bed = s.Bed.Add(rows[0].Bed)
		if len(rows[0].Bed.Bound(DefaultBedLimits)) > 0 {
			s.BedBound++
		}
	}
	for _, r := range rows {
		if !r.Counts() {
			s.Interrupted++
			continue
		}
		s.Rows++
		s.Lost += r.Lost
		s.Duplicated += r.Duplicated
		s.C2DLost += r.C2DLost
		if d, ok := r.Recovery(); ok {
			s.Recoveries = append(s.Recoveries, d)
		}
		if d, ok := r.Downstream(); ok {
			s.Downstreams = append(s.Downstreams, d)
		}
		if !r.Recovered() {
			s.NotRecovered++
		}
		if r.Deaf() {
			s.Deaf++
		}
		if d, ok := r.Detection(); ok {
			s.Detections = append(s.Detections, d)
		}
		if d, ok := r.Path(); ok {
			s.Paths = append(s.Paths, d)
		}
	}
}

// Completed is how many cycles of planned were completed, and how many an
// interrupt cut short: the one it stopped, whether its fault had begun
// (its rows are stored, marked) or not (nothing of it is).
func (s Summary) Completed(planned int) (completed, cutShort int) {
	completed = s.Cycles - s.CutShort
	return completed, min(1, planned-completed)
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

func (p *progress) cycle(n int, rows []Cycle, sum Summary) {
	var one Summary
	one.add(rows)
	rec, down, det, path := summarize(one.Recoveries), summarize(one.Downstreams), summarize(one.Detections), summarize(one.Paths)
	all := summarize(sum.Recoveries)
	elapsed := time.Since(p.start)
	eta := time.Duration(float64(elapsed) / float64(n) * float64(p.plan.Cycles-n)).Round(time.Second)
	fmt.Fprintf(p.w, "cycle %d/%d  recovery %s  downstream %s  detection %s  path %s  lost %d  not recovered %d  running median %s  ETA %s\n",
		n, p.plan.Cycles, fmtMs(rec), fmtMs(down), fmtMs(det), fmtMs(path), one.Lost, one.NotRecovered, fmtMs(all), eta)
}

func summarize(ds []time.Duration) stats.Metric { return stats.Summarize(stats.Millis(ds)) }

func fmtMs(m stats.Metric) string {
	if m.N == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f ms", round(m.Median))
}

// round rounds to whole milliseconds without printing "-0".
func round(ms float64) float64 {
	if r := math.Round(ms); r != 0 {
		return r
	}
	return 0
}

// Print writes the run's summary: recovery mean, median, p95 and max, how
// many device-cycles did not recover, message loss, detection and the
// test bed's path delay.
func (s Summary) Print(w io.Writer) {
	r := summarize(s.Recoveries)
	if r.N == s.Rows {
		fmt.Fprintf(w, "recovery over %d device-cycles: ", s.Rows)
	} else { // the statistics are of those whose messages came back only
		fmt.Fprintf(w, "recovery over the %d of %d device-cycles whose messages came back: ", r.N, s.Rows)
	}
	if r.N == 0 {
		fmt.Fprint(w, "none recovered")
	} else {
		fmt.Fprintf(w, "mean %.0f ms, median %.0f ms, p95 %.0f ms, max %.0f ms", round(r.Mean), round(r.Median), round(r.P95), round(r.Max))
	}
	fmt.Fprintf(w, "; not recovered %d", s.NotRecovered)
	if s.Deaf > 0 {
		fmt.Fprintf(w, " (%d of them deaf: upstream back, commands not)", s.Deaf)
	}
	fmt.Fprintf(w, "; messages lost %d, duplicated %d", s.Lost, s.Duplicated)
	if s.Interrupted > 0 {
		fmt.Fprintf(w, "; %d cut short by the interrupt, counted in none of these", s.Interrupted)
	}
	fmt.Fprintln(w)
	if d := summarize(s.Downstreams); d.N > 0 {
		fmt.Fprintf(w, "downstream (broker back -> first command received) over %d device-cycles: median %.0f ms, p95 %.0f ms, max %.0f ms; commands lost %d\n",
			d.N, round(d.Median), round(d.P95), round(d.Max), s.C2DLost)
	}
	if d := summarize(s.Detections); d.N > 0 {
		fmt.Fprintf(w, "detection: median %.0f ms over %d losses\n", round(d.Median), d.N)
	}
	if p := summarize(s.Paths); p.N > 0 {
		fmt.Fprintf(w, "path (broker back -> first answer through the devices' path): median %.0f ms, max %.0f ms\n", round(p.Median), round(p.Max))
	}
	if s.Bed.Measured() {
		fmt.Fprintf(w, "test bed, from each fault to its cycle's end: %s", s.Bed)
		if s.BedBound > 0 {
			fmt.Fprintf(w, "; WARNING: %d of %d cycles bed-bound (the machine, not the client, may have set their figures)", s.BedBound, s.Cycles)
		}
		fmt.Fprintln(w)
	}
}
