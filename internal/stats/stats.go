// Package stats is MTTR lab's one statistics path: medians with their
// distribution-free confidence intervals, quantiles and the Mann-Whitney U
// test, from golang.org/x/perf/benchmath as benchstat computes them, and
// the Mann-Kendall trend test, which benchmath lacks. It
// believes that a caveat is part of the result: too few samples give a
// warning and an infinite interval, never an error. It never prints.
package stats

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/aclements/go-moremath/stats"
	"golang.org/x/perf/benchmath"
)

// Confidence is the level of every confidence interval.
const Confidence = 0.95

// Metric summarises one measurement (milliseconds) of a run.
type Metric struct {
	N        int      `json:"n"`
	Median   float64  `json:"median"`
	Lo       float64  `json:"ci_lo"` // 95 % confidence interval of the median
	Hi       float64  `json:"ci_hi"`
	P95      float64  `json:"p95"`
	Min      float64  `json:"min"`
	Max      float64  `json:"max"`
	Mean     float64  `json:"mean"`
	Warnings []string `json:"warnings,omitempty"`
}

// Summarize computes a Metric with benchmath's AssumeNothing (a median and
// its distribution-free confidence interval). Too few values give infinite
// bounds and a warning, not an error.
func Summarize(values []float64) Metric {
	if len(values) == 0 {
		return Metric{Warnings: []string{"no values"}}
	}
	s := benchmath.NewSample(slices.Clone(values), &benchmath.DefaultThresholds)
	sum := benchmath.AssumeNothing.Summary(s, Confidence)
	m := Metric{N: len(values), Median: sum.Center, Lo: sum.Lo, Hi: sum.Hi}
	for _, w := range sum.Warnings {
		m.Warnings = append(m.Warnings, w.Error())
	}
	sorted := stats.Sample{Xs: s.Values, Sorted: true}
	m.P95 = sorted.Quantile(0.95)
	m.Min, m.Max = sorted.Bounds()
	m.Mean = sorted.Mean()
	return m
}

// Millis converts durations to the milliseconds Summarize takes.
func Millis(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

// HasCI reports whether the confidence interval is finite.
func (m Metric) HasCI() bool { return m.N > 0 && !math.IsInf(m.Lo, 0) && !math.IsInf(m.Hi, 0) }

// Delta compares one measurement between two runs.
type Delta struct {
	Name        string   `json:"metric"`
	Old         Metric   `json:"old"`
	New         Metric   `json:"new"`
	Delta       string   `json:"delta"` // "~" when not significant, else "+12.34%"
	P           float64  `json:"p"`     // Mann-Whitney U p-value
	N1          int      `json:"n1"`
	N2          int      `json:"n2"`
	Significant bool     `json:"significant"`
	Warnings    []string `json:"warnings,omitempty"`
}

// Worse reports a significant increase (all our metrics are times).
func (d Delta) Worse() bool { return d.Significant && d.New.Median > d.Old.Median }

// CompareSamples compares old and new with benchmath's AssumeNothing: the
// Mann-Whitney U test at level alpha, formatted as benchstat does.
func CompareSamples(name string, old, new []float64, alpha float64) Delta {
	d := Delta{Name: name, Old: Summarize(old), New: Summarize(new), N1: len(old), N2: len(new), Delta: "~", P: math.NaN()}
	if len(old) == 0 || len(new) == 0 {
		d.Warnings = append(d.Warnings, "nothing to compare")
		return d
	}
	th := benchmath.Thresholds{CompareAlpha: alpha}
	c := benchmath.AssumeNothing.Compare(benchmath.NewSample(slices.Clone(old), &th), benchmath.NewSample(slices.Clone(new), &th))
	d.P = c.P
	d.Delta = c.FormatDelta(d.Old.Median, d.New.Median)
	d.Significant = c.P <= alpha && d.Delta != "~"
	for _, w := range c.Warnings {
		d.Warnings = append(d.Warnings, w.Error())
	}
	return d
}

// finite returns a pointer to v, or nil when v is NaN or infinite, so that
// JSON shows null where there is no number.
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// MarshalJSON writes infinite confidence bounds as null.
func (m Metric) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		N        int      `json:"n"`
		Median   *float64 `json:"median"`
		Lo       *float64 `json:"ci_lo"`
		Hi       *float64 `json:"ci_hi"`
		P95      *float64 `json:"p95"`
		Min      *float64 `json:"min"`
		Max      *float64 `json:"max"`
		Mean     *float64 `json:"mean"`
		Warnings []string `json:"warnings,omitempty"`
	}{m.N, finite(m.Median), finite(m.Lo), finite(m.Hi), finite(m.P95), finite(m.Min), finite(m.Max), finite(m.Mean), m.Warnings})
}

// MarshalJSON writes a missing p-value as null.
func (d Delta) MarshalJSON() ([]byte, error) {
	type plain Delta
	return json.Marshal(struct {
		plain
		P *float64 `json:"p"`
	}{plain(d), finite(d.P)})
}

// Trend is the Mann-Kendall test of a series for a monotonic trend: here,
// of recovery against the cycle's index. Cycles that each start afresh give
// no trend; a backoff that carries over from one cycle to the next does.
type Trend struct {
	N   int     `json:"n"`   // values in the series
	Tau float64 `json:"tau"` // Kendall's τ against the index, in [-1, 1]
	P   float64 `json:"p"`   // two-sided p-value (normal approximation, corrected for ties); NaN below MinTrend values
}

// MinTrend is the fewest values the trend test is run on: below it the
// normal approximation of its statistic is too rough.
const MinTrend = 8

// TrendOf tests ys, in order, for a monotonic trend.
func TrendOf(ys []float64) Trend {
	n := len(ys)
	t := Trend{N: n, P: math.NaN()}
	if n < 2 {
		return t
	}
	var s float64
	for i := range n {
		for j := i + 1; j < n; j++ {
			switch {
			case ys[j] > ys[i]:
				s++
			case ys[j] < ys[i]:
				s--
			}
		}
	}
	t.Tau = s / float64(n*(n-1)/2)
	if n < MinTrend {
		return t
	}
	nf := float64(n)
	variance := nf * (nf - 1) * (2*nf + 5) / 18
	sorted := slices.Sorted(slices.Values(ys))
	for i := 0; i < n; {
		j := i + 1
		for j < n && sorted[j] == sorted[i] {
			j++
		}
		if k := float64(j - i); k > 1 {
			variance -= k * (k - 1) * (2*k + 5) / 18
		}
		i = j
	}
	if variance <= 0 {
		t.P = 1
		return t
	}
	z := 0.0 // with the continuity correction
	if s > 0 {
		z = (s - 1) / math.Sqrt(variance)
	} else if s < 0 {
		z = (s + 1) / math.Sqrt(variance)
	}
	t.P = math.Erfc(math.Abs(z) / math.Sqrt2)
	return t
}

// Warning says, when the trend is significant at alpha, that the series
// rises or falls with its index; "" otherwise.
func (t Trend) Warning(alpha float64) string {
	if math.IsNaN(t.P) || t.P > alpha {
		return ""
	}
	dir := "rises"
	if t.Tau < 0 {
		dir = "falls"
	}
	return fmt.Sprintf("recovery %s with the cycle (Kendall τ = %+.2f, p = %.3g, %d cycles): the cycles are not independent, e.g. a reconnect backoff that carries over from one cycle to the next",
		dir, t.Tau, t.P, t.N)
}

// MarshalJSON writes a missing p-value as null.
func (t Trend) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		N   int      `json:"n"`
		Tau float64  `json:"tau"`
		P   *float64 `json:"p"`
	}{t.N, t.Tau, finite(t.P)})
}
