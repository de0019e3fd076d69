package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/store"
)

// What a run does when its store stops taking its rows (a PostgreSQL
// server that went away): it goes on measuring and keeps every finished
// cycle: the moment the store refuses one, it is written to a rescue file
// of the run's own (SQLite, beside MTTR_HTML), and the store is offered
// the waiting cycles again, in order, at each cycle's end. At the run's
// end it retries for MTTR_STORE_GRACE (once only after an interrupt). When
// the store took everything, the rescue file is removed; when not, the run
// fails naming it, and `mage import` adds its cycles and outcome to the
// run once the store is back. A crash meanwhile leaves the file too.
const (
	storeAttempt = 5 * time.Second // one write to the store
	storeRetry   = time.Second     // between retries at the run's end
)

// runRecord writes a run's outcome and cycles to its store.
type runRecord struct {
	db      *store.Store
	run     store.Run // as started, with its id
	printf  func(format string, args ...any)
	rescue  string         // the rescue file's path
	grace   time.Duration  // how long the run's end retries
	pending [][]mttr.Cycle // finished cycles the store has not taken yet, in order
	rescued int            // how many of pending are in the rescue file
	file    *store.Store   // the rescue file, once a cycle waited
	fileRun int64          // the run's id there
	down    error          // the store's last refusal
}

// save is the experiment's sink: it fails the run only when neither the
// store nor the rescue file takes the cycle.
func (r *runRecord) save(ctx context.Context, rows []mttr.Cycle) error {
	r.pending = append(r.pending, rows)
	if r.flush(ctx) {
		return nil
	}
	return r.keep(ctx)
}

// flush offers the store the waiting cycles in order, and reports whether
// none is left. A cycle the store has already (its answer was lost on the
// way back) counts as taken.
func (r *runRecord) flush(ctx context.Context) bool {
	wrote := false
	for len(r.pending) > 0 {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeAttempt)
		err := r.db.SaveCycle(actx, r.run.ID, r.pending[0])
		cancel()
		if err != nil && !store.IsDuplicate(err) {
			if r.down == nil {
				r.printf("store %s refused cycle %d: %v; the run goes on and keeps its cycles in %s until the store takes them\n",
					r.db.Path(), r.pending[0][0].Cycle, err, r.rescue)
			}
			r.down = err
			return false
		}
		r.pending = r.pending[1:]
		r.rescued = max(0, r.rescued-1)
		wrote = true
	}
	if wrote && r.down != nil {
		r.printf("store %s took the waiting cycles again\n", r.db.Path())
		r.down = nil
	}
	return true
}

// keep writes the waiting cycles not in the rescue file yet to it, making
// the file (and the run in it) on first use.
func (r *runRecord) keep(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	if r.file == nil {
		if _, err := os.Stat(r.rescue); err == nil {
			return fmt.Errorf("rescue file %s exists already: move it away", r.rescue)
		}
		if err := os.MkdirAll(filepath.Dir(r.rescue), 0o755); err != nil {
			return fmt.Errorf("rescue file: %w", err)
		}
		f, err := store.Open(ctx, r.rescue)
		if err != nil {
			return fmt.Errorf("rescue file: %w", err)
		}
		run := r.run
		run.StudyID, run.StudyPosition = 0, 0 // its study is in the store; import finds the run there
		id, err := f.StartRun(ctx, run)
		if err != nil {
			f.Close()
			return fmt.Errorf("rescue file %s: %w", r.rescue, err)
		}
		r.file, r.fileRun = f, id
	}
	for ; r.rescued < len(r.pending); r.rescued++ {
		if err := r.file.SaveCycle(ctx, r.fileRun, r.pending[r.rescued]); err != nil && !store.IsDuplicate(err) {
			return fmt.Errorf("store %s refused cycle %d (%v), and so did the rescue file %s: %w",
				r.db.Path(), r.pending[r.rescued][0].Cycle, r.down, r.rescue, err)
		}
	}
	return nil
}

// finish records the run's outcome, in the store if it takes it and every
// waiting cycle within the grace (one try after an interrupt), else in the
// rescue file, and then returns an error that says how to import it.
func (r *runRecord) finish(ctx context.Context, status, errText string, interrupted bool) error {
	if r.file != nil { // the outcome goes where the waiting cycles are, first
		if err := r.file.FinishRun(context.WithoutCancel(ctx), r.fileRun, status, errText); err != nil {
			r.printf("rescue file %s: %v\n", r.rescue, err)
		}
	}
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
				return r.dropRescue()
			}
			if r.down == nil {
				r.printf("store %s refused the run's outcome: %v\n", r.db.Path(), err)
			}
			r.down = err
		}
		if !time.Now().Before(deadline) {
			break
		}
		t := time.NewTimer(storeRetry)
		select {
		case <-ctx.Done(): // interrupted while retrying: the rescue file now
			deadline, interrupted = time.Now(), true
		case <-t.C:
		}
		t.Stop()
	}
	if err := r.keep(ctx); err != nil {
		return err
	}
	if err := r.file.FinishRun(context.WithoutCancel(ctx), r.fileRun, status, errText); err != nil {
		return fmt.Errorf("store %s refused run %d (%v), and so did the rescue file %s: %w", r.db.Path(), r.run.ID, r.down, r.rescue, err)
	}
	r.file.Close()
	when := "within " + r.grace.String()
	if interrupted {
		when = "at the interrupt"
	}
	return fmt.Errorf("store %s did not take run %d's outcome and %d of its cycles %s (%v); they are in %s: `go tool mage import %s` with MTTR_DB set to that store once it is back",
		r.db.Path(), r.run.ID, len(r.pending), when, r.down, r.rescue, r.rescue)
}

// dropRescue removes the rescue file once the store has everything in it.
func (r *runRecord) dropRescue() error {
	if r.file == nil {
		return nil
	}
	r.file.Close()
	r.file = nil
	err := errors.Join(os.Remove(r.rescue), removeIfExists(r.rescue+"-wal"), removeIfExists(r.rescue+"-shm"))
	if err != nil {
		return fmt.Errorf("the store has every cycle, but its rescue file stays: %w", err)
	}
	r.printf("store %s has every cycle: removed the rescue file %s\n", r.db.Path(), r.rescue)
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}
