package mttr

import (
	"math"
	"slices"
	"time"
)

// Storm is one cycle of a fleet: every device's row of it. When many
// devices reconnect at once, how long the last of them takes is the
// measure, as much as the median.
type Storm []Cycle

// Devices is how many devices the cycle counts (rows not cut short).
func (s Storm) Devices() int {
	n := 0
	for _, c := range s {
		if c.Counts() {
			n++
		}
	}
	return n
}

// recoveries are the cycle's recovery durations, shortest first: one per
// counted device whose messages were acknowledged again.
func (s Storm) recoveries() []time.Duration {
	var out []time.Duration
	for _, c := range s {
		if !c.Counts() {
			continue
		}
		if d, ok := c.Recovery(); ok {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// Median is the median recovery of the cycle's devices, a device that
// did not recover counting as slower than any that did; false when that
// median is one that did not.
func (s Storm) Median() (time.Duration, bool) {
	n := s.Devices()
	rec := s.recoveries()
	if n == 0 {
		return 0, false
	}
	if n%2 == 1 {
		if n/2 >= len(rec) {
			return 0, false
		}
		return rec[n/2], true
	}
	if n/2 >= len(rec) {
		return 0, false
	}
	return (rec[n/2-1] + rec[n/2]) / 2, true
}

// RecoveredBy is how long after the broker was ready a fraction q (in
// (0, 1]) of the cycle's devices had recovered; false when fewer did.
func (s Storm) RecoveredBy(q float64) (time.Duration, bool) {
	n := s.Devices()
	rec := s.recoveries()
	k := int(math.Ceil(q*float64(n) - 1e-9)) // devices needed
	if n == 0 || k < 1 || k > len(rec) {
		return 0, false
	}
	return rec[k-1], true
}

// Curve is the fraction of the cycle's devices recovered against the
// time since the broker was ready: one step per device that recovered.
func (s Storm) Curve() []StormPoint {
	n := s.Devices()
	var out []StormPoint
	for i, d := range s.recoveries() {
		out = append(out, StormPoint{After: d, Fraction: float64(i+1) / float64(n)})
	}
	return out
}

// StormPoint is one step of a Curve.
type StormPoint struct {
	After    time.Duration // since the broker was ready
	Fraction float64       // of the cycle's devices recovered by then
}

// AcceptPeak is the broker's peak accepted-connection rate in the cycle,
// per second (BrokerAcceptPeak, the same on every row).
func (s Storm) AcceptPeak() int {
	for _, c := range s {
		if c.BrokerAcceptPeak > 0 {
			return c.BrokerAcceptPeak
		}
	}
	return 0
}

// Storms splits rows (a run's, ordered by cycle) into its cycles.
func Storms(rows []Cycle) []Storm {
	var out []Storm
	for i := 0; i < len(rows); {
		j := i
		for j < len(rows) && rows[j].Cycle == rows[i].Cycle {
			j++
		}
		out = append(out, Storm(rows[i:j]))
		i = j
	}
	return out
}
