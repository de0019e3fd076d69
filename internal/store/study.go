package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrNoStudy reports a study label that the database does not hold.
var ErrNoStudy = errors.New("no such study")

// Study groups the runs of one plan: every combination of its settings'
// lists, one run each, in an order drawn from Seed.
type Study struct {
	ID        int64
	Label     string
	Seed      uint64
	PlanJSON  string // the combinations in their order, and the settings they share
	StartedAt time.Time
}

// StudyPlan is what a study stores (PlanJSON) to be resumed and reported:
// its combinations in the order they run, and the settings they share.
type StudyPlan struct {
	Cells    []StudyCell       `json:"cells"`
	Settings map[string]string `json:"settings"`
}

// StudyCell is one combination of a study: what its run varies.
type StudyCell struct {
	Fault    string `json:"fault"`
	KeepDead string `json:"keep_dead"` // a duration, as Go writes it
	Devices  int    `json:"devices"`
}

func (c StudyCell) String() string {
	return fmt.Sprintf("fault %s, keep-dead %s, %d device(s)", c.Fault, c.KeepDead, c.Devices)
}

// Of reports whether run r is of the combination c.
func (c StudyCell) Of(r Run) bool {
	return r.Fault == c.Fault && r.KeepDead.String() == c.KeepDead && r.Devices == c.Devices
}

// Plan decodes PlanJSON.
func (st Study) Plan() (StudyPlan, error) {
	var p StudyPlan
	if err := json.Unmarshal([]byte(st.PlanJSON), &p); err != nil {
		return StudyPlan{}, fmt.Errorf("study %s: its stored plan: %w", st.Label, err)
	}
	return p, nil
}

// CreateStudy inserts st and returns its id. A label already taken is an
// error: resume that study instead (FindStudy).
func (s *Store) CreateStudy(ctx context.Context, st Study) (int64, error) {
	var id int64
	err := s.queryRow(ctx, `INSERT INTO studies (label, seed, plan_json, started_at) VALUES (?, ?, ?, ?) RETURNING id`,
		st.Label, int64(st.Seed), st.PlanJSON, st.StartedAt.UnixNano()).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("store: create study %q: %w", st.Label, err)
	}
	return id, nil
}

// FindStudy returns the study with label, or an error wrapping ErrNoStudy.
func (s *Store) FindStudy(ctx context.Context, label string) (Study, error) {
	return s.study(ctx, `WHERE label = ?`, label)
}

// LatestStudy returns the newest study, or an error wrapping ErrNoStudy.
func (s *Store) LatestStudy(ctx context.Context) (Study, error) {
	return s.study(ctx, `ORDER BY id DESC LIMIT 1`)
}

func (s *Store) study(ctx context.Context, where string, args ...any) (Study, error) {
	var st Study
	var seed, started int64
	err := s.queryRow(ctx, `SELECT id, label, seed, plan_json, started_at FROM studies `+where, args...).
		Scan(&st.ID, &st.Label, &seed, &st.PlanJSON, &started)
	if errors.Is(err, sql.ErrNoRows) {
		what := "no study yet"
		if len(args) > 0 {
			what = fmt.Sprintf("study %q", args[0])
		}
		return Study{}, fmt.Errorf("%s: %w", what, ErrNoStudy)
	} else if err != nil {
		return Study{}, fmt.Errorf("store: study: %w", err)
	}
	st.Seed, st.StartedAt = uint64(seed), time.Unix(0, started)
	return st, nil
}

// StudyRuns returns the runs of study id in the study's order, each
// position's runs oldest first.
func (s *Store) StudyRuns(ctx context.Context, id int64) ([]Run, error) {
	return s.queryRuns(ctx, `WHERE study_id = ? ORDER BY study_position, id`, id)
}
