package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/mttrlab/mttr/internal/localbroker"
	"github.com/mttrlab/mttr/internal/runnote"
	"github.com/mttrlab/mttr/internal/store"
)

// notesDir is where runs leave their notes (package runnote):
// <user cache dir>/mttr-lab/runs.
func notesDir() (string, error) {
	root, err := localbroker.DefaultCacheRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "runs"), nil
}

// noteRun leaves the note of run id in the database at path, owned by
// owner; take removes it.
func noteRun(path string, id int64, owner string) (take func(), err error) {
	if store.IsPostgres(path) {
		// A note would keep the URL's password on disk; the next run on
		// this machine marks the run abandoned in the shared database itself
		// (abandonRuns: its machine and process).
		return func() {}, nil
	}
	dir, err := notesDir()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("run note: %w", err)
	}
	return runnote.Leave(dir, runnote.Note{DB: abs, Run: id, Owner: owner})
}

// abandonNoted marks abandoned, each in its own database, the runs whose
// notes name a process of this machine that is gone, and takes those
// notes. Runs of the database at current are left to abandonRuns.
func (l *Lab) abandonNoted(ctx context.Context, current string) error {
	dir, err := notesDir()
	if err != nil {
		return err
	}
	notes, err := runnote.List(dir)
	if err != nil {
		return err
	}
	cur, _ := filepath.Abs(current)
	for _, n := range notes {
		if _, gone := ownerGone(n.Owner); !gone {
			continue
		}
		if n.DB != cur {
			if err := l.abandonIn(ctx, n.Note); err != nil {
				l.printf("note: %v\n", err) // another database's trouble does not stop this run
				continue
			}
		}
		n.Take()
	}
	return nil
}

// abandonIn marks n's run abandoned in its database, if it is still
// running there.
func (l *Lab) abandonIn(ctx context.Context, n runnote.Note) error {
	if _, err := os.Stat(n.DB); errors.Is(err, fs.ErrNotExist) {
		return nil // the database went, and the run with it
	}
	db, err := store.Open(ctx, n.DB)
	if err != nil {
		return fmt.Errorf("run %d of %s, whose process (%s) is gone: %w", n.Run, n.DB, n.Owner, err)
	}
	defer db.Close()
	running, err := db.Running(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(running, func(r store.Run) bool { return r.ID == n.Run }) {
		return nil
	}
	if err := db.FinishRun(ctx, n.Run, store.StatusAbandoned, "the process running it was killed"); err != nil {
		return err
	}
	l.printf("marked run %d of %s abandoned: the process running it (%s) is gone\n", n.Run, n.DB, n.Owner)
	return nil
}
