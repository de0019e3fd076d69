package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/mttrlab/mttr/internal/localbroker"
	"github.com/mttrlab/mttr/internal/store"
)

// A running `mage mttr` leaves a note of its database and run id in the
// user's cache directory (mttr-lab/runs/), and takes it back once the run
// is finished. A later run, whatever its own MTTR_DB, finds the notes of
// runs whose process is gone from this machine and marks those runs
// abandoned in their own database: a killed run does not stay "running"
// because nobody opened its database again.

// runNote is one live run's note.
type runNote struct {
	DB    string `json:"db"`    // absolute path of its database
	Run   int64  `json:"run"`   // its id there
	Owner string `json:"owner"` // "<machine>:<pid>", as LabelOwner
}

func notesDir() (string, error) {
	root, err := localbroker.DefaultCacheRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "runs"), nil
}

// noteRun leaves the note of run id in the database at path, owned by
// owner; remove takes it back.
func noteRun(path string, id int64, owner string) (remove func(), err error) {
	dir, err := notesDir()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("run note: %w", err)
	}
	b, err := json.Marshal(runNote{DB: abs, Run: id, Owner: owner})
	if err != nil {
		return nil, fmt.Errorf("run note: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("run note: %w", err)
	}
	name := filepath.Join(dir, owner+"-"+strconv.FormatInt(id, 10)+".json")
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return nil, fmt.Errorf("run note: %w", err)
	}
	return func() { _ = os.Remove(name) }, nil
}

// abandonNoted marks abandoned, each in its own database, the runs whose
// notes name a process of this machine that is gone, and removes those
// notes. Runs of the database at current are left to abandonRuns.
func (l *Lab) abandonNoted(ctx context.Context, current string) error {
	dir, err := notesDir()
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("run notes: %w", err)
	}
	cur, _ := filepath.Abs(current)
	for _, e := range entries {
		name := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(name)
		if err != nil {
			continue // taken back meanwhile
		}
		var n runNote
		if json.Unmarshal(b, &n) != nil {
			_ = os.Remove(name)
			continue
		}
		if _, gone := ownerGone(n.Owner); !gone {
			continue
		}
		if n.DB != cur {
			if err := l.abandonIn(ctx, n); err != nil {
				l.printf("note: %v\n", err) // another database's trouble does not stop this run
				continue
			}
		}
		_ = os.Remove(name)
	}
	return nil
}

// abandonIn marks n's run abandoned in its database, if it is still
// running there.
func (l *Lab) abandonIn(ctx context.Context, n runNote) error {
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
