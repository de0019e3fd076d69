package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/store"
)

// What a run does when its store stops taking its rows (a PostgreSQL
// server that went away, a full disk): it goes on measuring, keeps every
// finished cycle in memory and writes the waiting ones, in order, at each
// cycle's end. At the run's end it retries for MTTR_STORE_GRACE (not
// after an interrupt, which leaves a few seconds); when the store still
// refuses, it writes the run and the cycles the store lacks to an SQLite
// file of its own, which `mage import` loads into the store once it is
// back, and the run fails saying so. No finished cycle is lost.
const (
	storeAttempt = 5 * time.Second // one write to the store
	storeRetry   = time.Second     // between retries at the run's end
)

// runRecord writes a run's outcome and cycles to its store.
type runRecord struct {
	db      *store.Store
	run     store.Run // as started, with its id
	printf  func(format string, args ...any)
	rescue  string         // where the waiting rows go if the store never takes them
	grace   time.Duration  // how long the run's end retries
	pending [][]mttr.Cycle // finished cycles the store has not taken yet
	down    error          // the store's last refusal while rows wait
}

// save is the experiment's sink: it never fails the run for the store.
func (r *runRecord) save(ctx context.Context, rows []mttr.Cycle) error {
	r.pending = append(r.pending, rows)
	r.flush(ctx)
	return nil
}

// flush writes the waiting rows in order, and reports whether none is
// left. A cycle the store already has (its answer was lost on the way
// back) counts as written.
func (r *runRecord) flush(ctx context.Context) bool {
	for len(r.pending) > 0 {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeAttempt)
		err := r.db.SaveCycle(actx, r.run.ID, r.pending[0])
		cancel()
		if err != nil && !store.IsDuplicate(err) {
			if r.down == nil {
				r.printf("store %s refused cycle %d: %v; the run goes on, keeps its cycles and writes them when it takes them again\n",
					store.Shown(r.db.Path()), r.pending[0][0].Cycle, err)
			}
			r.down = err
			return false
		}
		r.pending = r.pending[1:]
	}
	if r.down != nil {
		r.printf("store %s took the waiting cycles again\n", store.Shown(r.db.Path()))
		r.down = nil
	}
	return true
}

// finish records the run's outcome. When the store will not take it,
// with every cycle it lacks, within storeGrace (none when interrupted),
// they go to the rescue file and the error names it.
func (r *runRecord) finish(ctx context.Context, status, errText string, interrupted bool) error {
	deadline := time.Now().Add(r.grace)
	if interrupted {
		deadline = time.Now()
	}
	for {
		if r.flush(ctx) {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeAttempt)
			err := r.db.FinishRun(actx, r.run.ID, status, errText)
			cancel()
			if err == nil {
				return nil
			}
			r.down = err
		}
		if !time.Now().Before(deadline) {
			break
		}
		t := time.NewTimer(storeRetry)
		select {
		case <-ctx.Done(): // interrupted while retrying: the rescue file now
			deadline = time.Now()
		case <-t.C:
		}
		t.Stop()
	}
	return r.writeRescue(ctx, status, errText)
}

// writeRescue writes the run and the cycles its store lacks to the rescue
// file, and returns the error that says where they are.
func (r *runRecord) writeRescue(ctx context.Context, status, errText string) error {
	if err := os.MkdirAll(filepath.Dir(r.rescue), 0o755); err != nil {
		return fmt.Errorf("store %s refused the run (%v), and its rescue file too: %w", store.Shown(r.db.Path()), r.down, err)
	}
	f, err := store.Open(context.WithoutCancel(ctx), r.rescue)
	if err != nil {
		return fmt.Errorf("store %s refused the run (%v), and its rescue file %s too: %w", store.Shown(r.db.Path()), r.down, r.rescue, err)
	}
	defer f.Close()
	run := r.run
	id, err := f.StartRun(context.WithoutCancel(ctx), run)
	if err == nil {
		for _, rows := range r.pending {
			if err = f.SaveCycle(context.WithoutCancel(ctx), id, rows); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = f.FinishRun(context.WithoutCancel(ctx), id, status, errText)
	}
	if err != nil {
		return fmt.Errorf("store %s refused the run (%v), and its rescue file %s too: %w", store.Shown(r.db.Path()), r.down, r.rescue, err)
	}
	return fmt.Errorf("store %s did not take run %d's outcome and %d of its cycles within %s (%v); they are in %s: `MTTR_DB=%s go tool mage import %s` once the store is back",
		store.Shown(r.db.Path()), r.run.ID, len(r.pending), r.grace, r.down, r.rescue, store.Shown(r.db.Path()), r.rescue)
}
