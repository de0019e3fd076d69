package report

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/mttrlab/mttr/internal/stats"
	"github.com/mttrlab/mttr/internal/store"
)

// StudyReport is a study: the run of each of its combinations with its
// statistics, for the table and the chart of recovery against keep-dead.
type StudyReport struct {
	DB        string      `json:"db"`
	Label     string      `json:"study"`
	Seed      uint64      `json:"seed"`
	StartedAt time.Time   `json:"started_at"`
	Alpha     float64     `json:"alpha"`
	Planned   int         `json:"runs_planned"`
	Completed int         `json:"runs_completed"`
	Cells     []StudyCell `json:"cells"`
	// Chart is where the chart of recovery against keep-dead was written
	// (an SVG file), for the outputs that cannot hold it; empty when none.
	Chart string `json:"chart,omitempty"`
}

// StudyCell is one combination of a study and its newest completed run
// (or, when none completed, its newest run; none when it has not run).
type StudyCell struct {
	Fault        string       `json:"fault"`
	KeepDeadMS   int64        `json:"keep_dead_ms"`
	Devices      int          `json:"devices"`
	RunID        int64        `json:"run_id,omitempty"`
	Status       string       `json:"status,omitempty"`
	DeviceCycles int          `json:"device_cycles"`
	NotRecovered int          `json:"not_recovered"`
	Recovery     stats.Metric `json:"recovery_ms"`
	Downstream   stats.Metric `json:"downstream_ms"`
	TrendWarning string       `json:"recovery_trend_warning,omitempty"`

	recovery, downstream []float64 // samples, for comparisons
}

// Key names the combination.
func (c StudyCell) Key() string {
	return fmt.Sprintf("fault %s, keep-dead %s, %d device(s)", c.Fault, fmtDur(c.KeepDeadMS), c.Devices)
}

// Series names the line a cell is on in the chart: its fault, and its
// fleet size when the study has several.
func (c StudyCell) Series(fleets int) string {
	if fleets > 1 {
		return fmt.Sprintf("%s, %d devices", c.Fault, c.Devices)
	}
	return c.Fault
}

// fleets is how many fleet sizes the study has.
func (s *StudyReport) fleets() int {
	seen := map[int]bool{}
	for _, c := range s.Cells {
		seen[c.Devices] = true
	}
	return len(seen)
}

// BuildStudy reads study label (the newest study when empty) from st.
func BuildStudy(ctx context.Context, st *store.Store, label string, alpha float64) (*StudyReport, error) {
	var study store.Study
	var err error
	if label == "" {
		study, err = st.LatestStudy(ctx)
	} else {
		study, err = st.FindStudy(ctx, label)
	}
	if err != nil {
		return nil, fmt.Errorf("%w in %s: make one with comma lists in MTTR_FAULT, MTTR_KEEP_DEAD or MTTR_DEVICES and `mage mttr`", err, st.Path())
	}
	plan, err := study.Plan()
	if err != nil {
		return nil, err
	}
	runs, err := st.StudyRuns(ctx, study.ID)
	if err != nil {
		return nil, err
	}
	rep := &StudyReport{DB: st.Path(), Label: study.Label, Seed: study.Seed, StartedAt: study.StartedAt.UTC(), Alpha: alpha, Planned: len(plan.Cells)}
	for pos, pc := range plan.Cells {
		kd, err := time.ParseDuration(pc.KeepDead)
		if err != nil {
			return nil, fmt.Errorf("study %s: keep-dead %q: %w", study.Label, pc.KeepDead, err)
		}
		cell := StudyCell{Fault: pc.Fault, KeepDeadMS: kd.Milliseconds(), Devices: pc.Devices}
		var chosen *store.Run
		for i := range runs { // oldest first: the newest completed one wins, else the newest
			r := &runs[i]
			if r.StudyPosition != pos+1 {
				continue
			}
			if chosen == nil || chosen.Status != store.StatusCompleted || r.Status == store.StatusCompleted {
				chosen = r
			}
		}
		if chosen != nil {
			l, err := summarize(ctx, st, *chosen, alpha) // its cycles go with l: the cell keeps the statistics and samples
			if err != nil {
				return nil, err
			}
			s := l.summary
			cell.RunID, cell.Status, cell.DeviceCycles, cell.NotRecovered = s.ID, s.Status, s.DeviceCycles, s.NotRecovered
			cell.Recovery, cell.Downstream, cell.TrendWarning = s.Recovery, s.Downstream, s.TrendWarning
			cell.recovery, cell.downstream = l.samples.recovery, l.samples.downstream
			if s.Status == store.StatusCompleted {
				rep.Completed++
			}
		}
		rep.Cells = append(rep.Cells, cell)
	}
	// The table's order: fleet size, fault (by name), keep-dead.
	slices.SortStableFunc(rep.Cells, func(a, b StudyCell) int {
		return cmp.Or(cmp.Compare(a.Devices, b.Devices), cmp.Compare(a.Fault, b.Fault), cmp.Compare(a.KeepDeadMS, b.KeepDeadMS))
	})
	return rep, nil
}

// StudyComparison sets two studies side by side, combination by
// combination: those both have.
type StudyComparison struct {
	Old   *StudyReport `json:"old"`
	New   *StudyReport `json:"new"`
	Alpha float64      `json:"alpha"`
	Cells []CellDelta  `json:"cells"`
	// Unmatched are combinations only one of them has.
	Unmatched []string `json:"unmatched,omitempty"`
}

// CellDelta is one combination of two studies compared.
type CellDelta struct {
	Cell       string      `json:"cell"`
	Recovery   stats.Delta `json:"recovery"`
	Downstream stats.Delta `json:"downstream"`
}

// CompareStudies compares study a (old) with study b (new) cell by cell,
// each with the Mann-Whitney U test at alpha.
func CompareStudies(ctx context.Context, st *store.Store, a, b string, alpha float64) (*StudyComparison, error) {
	old, err := BuildStudy(ctx, st, a, alpha)
	if err != nil {
		return nil, err
	}
	cur, err := BuildStudy(ctx, st, b, alpha)
	if err != nil {
		return nil, err
	}
	c := &StudyComparison{Old: old, New: cur, Alpha: alpha}
	byKey := map[string]StudyCell{}
	for _, cell := range old.Cells {
		byKey[cell.Key()] = cell
	}
	matched := map[string]bool{}
	for _, n := range cur.Cells {
		o, ok := byKey[n.Key()]
		if !ok {
			c.Unmatched = append(c.Unmatched, fmt.Sprintf("%s: only in %s", n.Key(), cur.Label))
			continue
		}
		matched[n.Key()] = true
		c.Cells = append(c.Cells, CellDelta{
			Cell:       n.Key(),
			Recovery:   stats.CompareSamples("recovery", o.recovery, n.recovery, alpha),
			Downstream: stats.CompareSamples("downstream", o.downstream, n.downstream, alpha),
		})
	}
	for _, o := range old.Cells {
		if !matched[o.Key()] {
			c.Unmatched = append(c.Unmatched, fmt.Sprintf("%s: only in %s", o.Key(), old.Label))
		}
	}
	if len(c.Cells) == 0 {
		return nil, fmt.Errorf("studies %s and %s share no combination of fault, keep-dead and devices", old.Label, cur.Label)
	}
	return c, nil
}
