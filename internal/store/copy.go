package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/mttrlab/mttr/internal/mttr"
)

// Select resolves refs, each a run id, a study's label or a run label, to
// runs, oldest first and each once: an id names its run, a study's label
// the study's runs, a label every run that carries it.
func (s *Store) Select(ctx context.Context, refs []string) ([]Run, error) {
	seen := map[int64]bool{}
	var out []Run
	add := func(runs []Run) {
		for _, r := range runs {
			if !seen[r.ID] {
				seen[r.ID] = true
				out = append(out, r)
			}
		}
	}
	for _, ref := range refs {
		if id, err := strconv.ParseInt(ref, 10, 64); err == nil {
			r, err := s.GetRun(ctx, id)
			if err != nil {
				return nil, err
			}
			add([]Run{r})
			continue
		}
		if st, err := s.FindStudy(ctx, ref); err == nil {
			runs, err := s.StudyRuns(ctx, st.ID)
			if err != nil {
				return nil, err
			}
			add(runs)
			continue
		} else if !errors.Is(err, ErrNoStudy) {
			return nil, err
		}
		runs, err := s.queryRuns(ctx, `WHERE label = ? ORDER BY id`, ref)
		if err != nil {
			return nil, err
		}
		if len(runs) == 0 {
			return nil, fmt.Errorf("%q: %w (give a run id, a run label or a study label)", ref, ErrNoRun)
		}
		add(runs)
	}
	return out, nil
}

// AllRuns returns every run, oldest first.
func (s *Store) AllRuns(ctx context.Context) ([]Run, error) { return s.queryRuns(ctx, `ORDER BY id`) }

// Copied says what Copy did.
type Copied struct {
	Runs, Cycles int
	Skipped      int // runs the target had already
}

// Copy writes runs of from, with their cycles and their studies, into s,
// under ids s gives them. A run s has already (the same machine, process
// and start) is skipped, so copying twice copies once; a study s has (the
// same label) is reused when its plan is the same, and refused when not.
func (s *Store) Copy(ctx context.Context, from *Store, runs []Run) (Copied, error) {
	var c Copied
	studies := map[int64]int64{} // from's study id → s's
	for _, r := range runs {
		var have int
		if err := s.queryRow(ctx, `SELECT count(*) FROM runs WHERE machine = ? AND pid = ? AND started_at = ?`,
			r.Machine, r.PID, r.StartedAt.UnixNano()).Scan(&have); err != nil {
			return c, fmt.Errorf("store: copy run %d: %w", r.ID, err)
		}
		if have > 0 {
			c.Skipped++
			continue
		}
		if r.StudyID != 0 {
			id, ok := studies[r.StudyID]
			if !ok {
				var err error
				if id, err = s.copyStudy(ctx, from, r.StudyID); err != nil {
					return c, err
				}
				studies[r.StudyID] = id
			}
			r.StudyID = id
		}
		cycles, err := from.Cycles(ctx, r.ID)
		if err != nil {
			return c, err
		}
		if err := s.copyRun(ctx, r, cycles); err != nil {
			return c, err
		}
		c.Runs++
		c.Cycles += len(cycles)
	}
	return c, nil
}

// copyRun writes r and its cycles (ordered by cycle, as Cycles gives
// them) under a new id; a run half written is removed again, so that a
// later copy does not take it for done.
func (s *Store) copyRun(ctx context.Context, r Run, cycles []mttr.Cycle) (err error) {
	id, err := s.StartRun(ctx, r)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_, _ = s.exec(context.WithoutCancel(ctx), `DELETE FROM runs WHERE id = ?`, id)
		}
	}()
	if _, err := s.exec(ctx, `UPDATE runs SET status = ?, error = NULLIF(?, ''), finished_at = ? WHERE id = ?`,
		r.Status, r.Error, null(unixNano(r)), id); err != nil {
		return fmt.Errorf("store: copy run %d: %w", r.ID, err)
	}
	for i := 0; i < len(cycles); {
		j := i
		for j < len(cycles) && cycles[j].Cycle == cycles[i].Cycle {
			j++
		}
		if err := s.SaveCycle(ctx, id, cycles[i:j]); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// unixNano is when r finished, or 0 while it runs.
func unixNano(r Run) int64 {
	if r.FinishedAt.IsZero() {
		return 0
	}
	return r.FinishedAt.UnixNano()
}

// copyStudy gives s from's study id, or finds s's study of that label and
// plan, and returns its id in s.
func (s *Store) copyStudy(ctx context.Context, from *Store, id int64) (int64, error) {
	st, err := from.study(ctx, `WHERE id = ?`, id)
	if err != nil {
		return 0, err
	}
	have, err := s.FindStudy(ctx, st.Label)
	switch {
	case err == nil && have.PlanJSON == st.PlanJSON:
		return have.ID, nil
	case err == nil:
		return 0, fmt.Errorf("store: study %s is in both databases with other plans: rename one of them", st.Label)
	case !errors.Is(err, ErrNoStudy):
		return 0, err
	}
	return s.CreateStudy(ctx, st)
}
