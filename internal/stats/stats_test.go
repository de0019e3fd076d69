package stats

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// The expected p-values are exact Mann-Whitney U probabilities worked out
// by counting: with complete separation of two samples of n, only 2 of the
// C(2n, n) orderings are as extreme (two-sided); for {1,2,4} against
// {3,5,6}, U = 1 and P(U <= 1) = 2/20, doubled for two sides.
func TestMannWhitneyKnownCases(t *testing.T) {
	tests := []struct {
		old, new []float64
		p        float64
	}{
		{[]float64{1, 2, 3, 4, 5}, []float64{6, 7, 8, 9, 10}, 2.0 / 252},
		{[]float64{1, 2, 3, 4, 5, 6}, []float64{7, 8, 9, 10, 11, 12}, 2.0 / 924},
		{[]float64{1, 2, 4}, []float64{3, 5, 6}, 0.2},
	}
	for _, tt := range tests {
		d := CompareSamples("x", tt.old, tt.new, 0.05)
		if math.Abs(d.P-tt.p) > 1e-9 {
			t.Errorf("p(%v, %v) = %.6f, want %.6f", tt.old, tt.new, d.P, tt.p)
		}
	}
	d := CompareSamples("x", []float64{1, 2, 4}, []float64{3, 5, 6}, 0.05)
	if d.Delta != "~" || d.Significant {
		t.Errorf("p=0.2 reported as significant: %+v", d)
	}
	d = CompareSamples("x", []float64{1, 2, 3, 4, 5}, []float64{6, 7, 8, 9, 10}, 0.05)
	if d.Delta != "+166.67%" || !d.Worse() {
		t.Errorf("delta %q worse %v, want +166.67%% (median 3 -> 8)", d.Delta, d.Worse())
	}
}

// For n = 8 the distribution-free interval of the median between order
// statistics x(l) and x(u) covers P(l ≤ B < u), B ~ Binomial(8, 1/2):
// [x(2), x(7)] covers only 1 − 2·(1+8)/256 = 0.9297, while [x(1), x(7)]
// covers 1 − (1+8+1)/256 = 0.9609 ≥ 0.95 and is one of the two shortest.
func TestMedianCI(t *testing.T) {
	m := Summarize([]float64{5, 1, 7, 3, 8, 2, 6, 4})
	if m.Median != 4.5 || m.Lo != 1 || m.Hi != 7 || len(m.Warnings) != 0 {
		t.Errorf("Summarize = %+v, want median 4.5 in [1, 7]", m)
	}
	few := Summarize([]float64{1, 2, 3, 4, 5})
	if few.HasCI() || len(few.Warnings) != 1 || !strings.Contains(few.Warnings[0], "need >= 6 samples") {
		t.Errorf("five values: %+v, want an infinite interval and a warning", few)
	}
	if none := Summarize(nil); none.N != 0 || len(none.Warnings) == 0 {
		t.Errorf("no values: %+v", none)
	}
	if d := CompareSamples("x", nil, []float64{1}, 0.05); !math.IsNaN(d.P) || d.Delta != "~" || len(d.Warnings) == 0 {
		t.Errorf("empty comparison %+v", d)
	}
}

// TestTrendOf checks the Mann-Kendall test against values worked out by
// hand, and that the warning appears for a series with a strong cycle
// trend and not for the same values shuffled.
func TestTrendOf(t *testing.T) {
	// 1..10 in order: S = 45, τ = 1, Var(S) = 10·9·25/18 = 125,
	// z = (45 − 1)/√125 = 3.9355, p = erfc(z/√2) = 8.30e-5.
	up := TrendOf([]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	if up.Tau != 1 || math.Abs(up.P-8.30e-5) > 0.01e-5 {
		t.Errorf("1..10: τ %v p %v, want 1 and 8.30e-5", up.Tau, up.P)
	}
	// Ties: 1 1 2 2 3 3 4 4: S = 24 (of 28 pairs, 4 tied), Var(S) =
	// 8·7·21/18 − 4·(2·1·9/18) = 65.33 − 4 = 61.33, z = 23/√61.33 = 2.937,
	// p = 0.00332.
	ties := TrendOf([]float64{1, 1, 2, 2, 3, 3, 4, 4})
	if math.Abs(ties.Tau-24.0/28) > 1e-9 || math.Abs(ties.P-0.00332) > 0.00001 {
		t.Errorf("ties: τ %v p %v, want %v and 0.00332", ties.Tau, ties.P, 24.0/28)
	}
	if few := TrendOf([]float64{1, 2, 3}); !math.IsNaN(few.P) || few.Warning(0.05) != "" {
		t.Errorf("3 values: p %v, warning %q; want no test", few.P, few.Warning(0.05))
	}

	// A backoff that doubles and is never reset, with jitter: 12 cycles.
	rng := rand.New(rand.NewPCG(1, 2))
	var series []float64
	for i := range 12 {
		series = append(series, 500*float64(i+1)+rng.Float64()*400)
	}
	if w := TrendOf(series).Warning(0.05); !strings.Contains(w, "recovery rises with the cycle") {
		t.Errorf("trending series: warning %q", w)
	}
	shuffled := slices.Clone(series)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	if tr := TrendOf(shuffled); tr.Warning(0.05) != "" {
		t.Errorf("shuffled series %v: τ %v p %v, warning %q", shuffled, tr.Tau, tr.P, tr.Warning(0.05))
	}
}
