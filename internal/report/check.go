package report

import (
	"fmt"
	"io"
	"math"
)

// Verdict is the outcome of the regression gate.
type Verdict struct {
	Run      RunSummary `json:"run"`
	Failures []string   `json:"failures"` // why it failed; empty when it passed
	Passes   []string   `json:"passes"`   // what was checked and held
	// Inconclusive says why no verdict can be trusted, whatever the
	// checks say: the test bed bound some of the run's cycles.
	Inconclusive string `json:"inconclusive,omitempty"`
}

// OK reports whether every check held and the verdict can be trusted.
func (v Verdict) OK() bool { return len(v.Failures) == 0 && v.Inconclusive == "" }

// Check judges the newest completed run of rep: it fails when its recovery
// p95 exceeds maxP95 (milliseconds; 0 for no limit), when any device did
// not recover in either direction, or when its recovery or its downstream
// is significantly worse than the run it was compared with.
func Check(rep *Report, maxP95 float64) (Verdict, error) {
	var run *RunSummary
	if rep.Comparison != nil {
		run = &rep.Comparison.New
	} else {
		for i := range rep.Runs {
			if rep.Runs[i].Status == "completed" {
				run = &rep.Runs[i]
				break
			}
		}
	}
	if run == nil {
		return Verdict{}, fmt.Errorf("no completed run among the newest %d in %s to check", len(rep.Runs), rep.DB)
	}
	v := Verdict{Run: *run}
	fail := func(format string, args ...any) { v.Failures = append(v.Failures, fmt.Sprintf(format, args...)) }
	pass := func(format string, args ...any) { v.Passes = append(v.Passes, fmt.Sprintf(format, args...)) }

	if run.NotRecovered > 0 {
		why := ""
		if run.Deaf > 0 {
			why = fmt.Sprintf(" (%d of them deaf: messages acknowledged again, but no command received; downstream not recovered)", run.Deaf)
		}
		fail("%d of %d device-cycles did not recover%s", run.NotRecovered, run.DeviceCycles, why)
	} else {
		pass("all %d device-cycles recovered", run.DeviceCycles)
	}
	if maxP95 > 0 {
		switch p95 := run.Recovery.P95; {
		case run.Recovery.N == 0:
			fail("no recovery to compare with MTTR_MAX_P95=%s", fmtMS(maxP95, 1))
		case p95 > maxP95 || math.IsNaN(p95):
			fail("recovery p95 %s exceeds MTTR_MAX_P95=%s", fmtMS(p95, 1), fmtMS(maxP95, 1))
		default:
			pass("recovery p95 %s within MTTR_MAX_P95=%s", fmtMS(p95, 1), fmtMS(maxP95, 1))
		}
	}
	if c := rep.Comparison; c != nil {
		for _, d := range c.Deltas {
			if d.Name != "recovery" && d.Name != "downstream" {
				continue
			}
			switch {
			case d.Worse():
				fail("%s is significantly worse than %s: %s → %s (%s, p=%.3f)", d.Name, c.Old.Name(), fmtMS(d.Old.Median, 1), fmtMS(d.New.Median, 1), d.Delta, d.P)
			case d.Old.N == 0 && d.New.N == 0:
			default:
				pass("%s against %s: %s → %s (%s)", d.Name, c.Old.Name(), fmtMS(d.Old.Median, d.Old.N), fmtMS(d.New.Median, d.New.N), d.Delta)
			}
		}
	} else if rep.Note != "" {
		pass("no comparison: %s", rep.Note)
	}
	if run.BedWarning != "" {
		v.Inconclusive = run.BedWarning
	}
	return v, nil
}

// WriteVerdict prints what was checked, one line each.
func WriteVerdict(w io.Writer, v Verdict) {
	for _, p := range v.Passes {
		fmt.Fprintf(w, "ok    %s\n", p)
	}
	for _, f := range v.Failures {
		fmt.Fprintf(w, "FAIL  %s\n", f)
	}
	if v.Inconclusive != "" {
		fmt.Fprintf(w, "INCONCLUSIVE  %s\n", v.Inconclusive)
	}
}
