package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/mttrlab/mttr/internal/mttr"
)

// Select resolves refs, each a run id, a study's label or a run label, to
// runs, oldest (first started) first and each once: an id names its run, a study's label
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
	// Copies get ids in this order, and reports take a higher id for a
	// newer run.
	slices.SortStableFunc(out, func(a, b Run) int { return a.StartedAt.Compare(b.StartedAt) })
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
// and start) gets only the cycles it lacks, and its outcome while it is
// still running there (a rescue file's); with nothing to add it is
// skipped, so copying twice copies once. A study s has (the same label)
// is reused when its plan is the same, and refused when not.
func (s *Store) Copy(ctx context.Context, from *Store, runs []Run) (Copied, error) {
	var c Copied
	studies := map[int64]int64{} // from's study id → s's
	for _, r := range runs {
		have, err := s.queryRuns(ctx, `WHERE machine = ? AND pid = ? AND started_at = ?`, r.Machine, r.PID, r.StartedAt.UnixNano())
		if err != nil {
			return c, fmt.Errorf("store: copy run %d: %w", r.ID, err)
		}
		if len(have) > 0 {
			added, err := s.complete(ctx, have[0], from, r)
			if err != nil {
				return c, err
			}
			if added < 0 {
				c.Skipped++
			} else {
				c.Runs++
				c.Cycles += added
			}
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
	if err := s.saveCycles(ctx, id, cycles); err != nil {
		return err
	}
	// Its outcome last: a report meanwhile sees it running, not finished
	// with half its cycles.
	return s.FinishRunAt(ctx, id, r.Status, r.Error, r.FinishedAt)
}

// saveCycles saves rows (ordered by cycle) cycle by cycle.
func (s *Store) saveCycles(ctx context.Context, runID int64, rows []mttr.Cycle) error {
	for _, cycle := range mttr.Storms(rows) {
		if err := s.SaveCycle(ctx, runID, cycle); err != nil {
			return err
		}
	}
	return nil
}

// complete gives have, s's copy of from's run r, the cycles of r it
// lacks and, while have is still running (or was marked abandoned), r's
// outcome: what a rescue file brings once the store is back. It returns
// how many cycles it added, or -1 when it changed nothing.
func (s *Store) complete(ctx context.Context, have Run, from *Store, r Run) (int, error) {
	theirs, err := from.Cycles(ctx, r.ID)
	if err != nil {
		return 0, err
	}
	ours, err := s.Cycles(ctx, have.ID)
	if err != nil {
		return 0, err
	}
	type key struct {
		cycle  int
		device string
	}
	known := map[key]bool{}
	for _, c := range ours {
		known[key{c.Cycle, c.Device}] = true
	}
	var missing []mttr.Cycle
	for _, c := range theirs {
		if !known[key{c.Cycle, c.Device}] {
			missing = append(missing, c)
		}
	}
	if err := s.saveCycles(ctx, have.ID, missing); err != nil {
		return 0, err
	}
	changed := len(missing) > 0
	// Running, or marked abandoned by a later run that found its process
	// gone: the source knows how it ended.
	if (have.Status == StatusRunning || have.Status == StatusAbandoned) && r.Status != StatusRunning && r.Status != have.Status {
		if err := s.FinishRunAt(ctx, have.ID, r.Status, r.Error, r.FinishedAt); err != nil {
			return 0, err
		}
		changed = true
	}
	if !changed {
		return -1, nil
	}
	return len(missing), nil
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
