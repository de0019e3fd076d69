package lab

import (
	"context"
	"fmt"
	"github.com/mttrlab/mttr/internal/commalist"

	"github.com/mttrlab/mttr/internal/store"
)

// Export writes the runs what names (comma-separated run ids, run labels
// or study labels) from MTTR_DB, with their cycles and studies, to the
// SQLite file file, created if missing: an artifact a CI runner can keep.
// Runs the file has already are skipped.
func (l *Lab) Export(ctx context.Context, what, file string) error {
	if store.IsPostgres(file) {
		return fmt.Errorf("export %s: writes an SQLite file; to fill another PostgreSQL database, import the file there", store.Shown(file))
	}
	src, err := l.openResults(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	refs, err := commalist.Split(what)
	if err != nil {
		return fmt.Errorf("export %q: %w", what, err)
	}
	if len(refs) == 0 {
		return fmt.Errorf("export: name the runs: run ids, run labels or study labels, comma-separated")
	}
	runs, err := src.Select(ctx, refs)
	if err != nil {
		return fmt.Errorf("export from %s: %w", store.Shown(l.Config.DB), err)
	}
	dst, err := store.Open(ctx, file)
	if err != nil {
		return fmt.Errorf("export to %s: %w", store.Shown(file), err)
	}
	defer dst.Close()
	got, err := dst.Copy(ctx, src, runs)
	if err != nil {
		return fmt.Errorf("export to %s: %w", store.Shown(file), err)
	}
	l.printf("exported %d runs (%d cycle rows) to %s; %d it had already\n", got.Runs, got.Cycles, file, got.Skipped)
	return nil
}

// Import loads every run of the SQLite file file (an export) into MTTR_DB,
// under ids MTTR_DB gives them; runs it has already (the same machine,
// process and start) are skipped, so importing twice imports once.
func (l *Lab) Import(ctx context.Context, file string) error {
	if store.IsPostgres(file) {
		return fmt.Errorf("import %s: reads an SQLite file (an export, or a run's rescue file); MTTR_DB names where it goes", store.Shown(file))
	}
	src, err := store.OpenReadOnly(ctx, file)
	if err != nil {
		return fmt.Errorf("import %s: %w", store.Shown(file), err)
	}
	defer src.Close()
	runs, err := src.AllRuns(ctx)
	if err != nil {
		return err
	}
	dst, err := store.Open(ctx, l.Config.DB)
	if err != nil {
		return fromDB(err)
	}
	defer dst.Close()
	got, err := dst.Copy(ctx, src, runs)
	if err != nil {
		return fmt.Errorf("import %s into %s: %w", file, store.Shown(l.Config.DB), err)
	}
	l.printf("imported %d runs (%d cycle rows) from %s into %s; %d it had already\n", got.Runs, got.Cycles, file, store.Shown(l.Config.DB), got.Skipped)
	return nil
}
