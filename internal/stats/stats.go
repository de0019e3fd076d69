// Package stats is MTTR lab's one statistics path: medians with their
// distribution-free confidence intervals, quantiles and the Mann-Whitney U
// test, from golang.org/x/perf/benchmath as benchstat computes them. It
// believes that a caveat is part of the result: too few samples give a
// warning and an infinite interval, never an error. It never prints.
package stats

import (
	"encoding/json"
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
