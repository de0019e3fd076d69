package store

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/mttr"
)

// TestCopyRoundTrip exports runs chosen by id, label and study from each
// backend to an SQLite file, imports the file into a store that has runs
// of its own, and checks that every run comes back with the same fields
// (ids remapped) and the same cycles, and that importing again adds
// nothing.
func TestCopyRoundTrip(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ string) {
		ctx := t.Context()
		mk := func(label string, start int64, study int64, pos int, status string) int64 {
			r := sampleRun()
			r.Label, r.StartedAt, r.StudyID, r.StudyPosition = label, time.Unix(0, start), study, pos
			r.ClockOffset, r.ClockError = 1500*time.Microsecond, 250*time.Microsecond
			id, err := s.StartRun(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			var rows []mttr.Cycle
			for n := 1; n <= 2; n++ {
				for _, dev := range []string{"d", "d-2"} {
					rows = append(rows, mttr.Cycle{Cycle: n, Device: dev, FaultAt: start + int64(n)*1e9, ReadyAt: start + int64(n)*1e9 + 5e8,
						FirstAckAt: start + int64(n)*1e9 + 7e8, Listens: true, Session: mttr.SessionNew, BrokerAcceptPeak: 3, Published: 2, Acknowledged: 2, Delivered: 2})
				}
				if err := s.SaveCycle(ctx, id, rows[len(rows)-2:]); err != nil {
					t.Fatal(err)
				}
			}
			if status != StatusRunning {
				if err := s.FinishRunAt(ctx, id, status, "why", time.Unix(0, start+1e12)); err != nil {
					t.Fatal(err)
				}
			}
			return id
		}
		plan, _ := json.Marshal(StudyPlan{Cells: []StudyCell{{Fault: "stop", KeepDead: "7.5s", Devices: 2}}})
		study, err := s.CreateStudy(ctx, Study{Label: "s1", Seed: 9, PlanJSON: string(plan), StartedAt: time.Unix(0, 5)})
		if err != nil {
			t.Fatal(err)
		}
		a := mk("sdk-1", 1e15, 0, 0, StatusCompleted)
		mk("sdk-2", 2e15, 0, 0, StatusFailed)
		mk("sdk-2", 3e15, 0, 0, StatusInterrupted)
		mk("", 4e15, study, 1, StatusCompleted)
		mk("other", 5e15, 0, 0, StatusCompleted) // not chosen

		chosen, err := s.Select(ctx, []string{"s1", "sdk-2", "1", "sdk-1"}) // oldest first, whatever the order asked
		if err != nil || len(chosen) != 4 || chosen[0].ID != a {
			t.Fatalf("Select = %d runs, %v", len(chosen), err)
		}
		file, err := Open(ctx, filepath.Join(t.TempDir(), "export.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		if got, err := file.Copy(ctx, s, chosen); err != nil || got.Runs != 4 || got.Cycles != 16 {
			t.Fatalf("export: %+v, %v", got, err)
		}

		target, _ := open(t)
		mk2 := sampleRun()
		mk2.StartedAt = time.Unix(0, 9e15)
		if _, err := target.StartRun(ctx, mk2); err != nil { // ids in the target differ from the source's
			t.Fatal(err)
		}
		exported, err := file.AllRuns(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := target.Copy(ctx, file, exported); err != nil || got.Runs != 4 || got.Skipped != 0 {
			t.Fatalf("import: %+v, %v", got, err)
		}
		if got, err := target.Copy(ctx, file, exported); err != nil || got.Runs != 0 || got.Skipped != 4 {
			t.Fatalf("import again: %+v, %v", got, err)
		}
		imported, err := target.AllRuns(ctx)
		if err != nil || len(imported) != 5 {
			t.Fatalf("target has %d runs, %v", len(imported), err)
		}
		for i, want := range chosen {
			got := imported[i+1]
			if got.ID == want.ID {
				t.Errorf("run %d kept its id", want.ID)
			}
			if (got.StudyID == 0) != (want.StudyID == 0) {
				t.Errorf("run %d: study %d, want one when the source had %d", want.ID, got.StudyID, want.StudyID)
			}
			g, w := got, want
			g.ID, w.ID, g.StudyID, w.StudyID = 0, 0, 0, 0
			if !reflect.DeepEqual(g, w) {
				t.Errorf("run %d:\n%+v\nwant\n%+v", want.ID, g, w)
			}
			gc, err := target.Cycles(ctx, got.ID)
			if err != nil {
				t.Fatal(err)
			}
			wc, err := s.Cycles(ctx, want.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(gc, wc) {
				t.Errorf("run %d: cycles differ:\n%+v\nwant\n%+v", want.ID, gc, wc)
			}
		}
		if st, err := target.FindStudy(ctx, "s1"); err != nil || st.PlanJSON != string(plan) || st.Seed != 9 {
			t.Errorf("study s1 in the target: %+v, %v", st, err)
		}
	})
}

// TestBaselineAcrossMachines: runs of one database made on different
// machines (CI runners) are each other's baselines, and runs.machine says
// where each ran.
func TestBaselineAcrossMachines(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ string) {
		ctx := t.Context()
		var ids []int64
		for i, m := range []string{"runner-a", "runner-b"} {
			r := sampleRun()
			r.Machine, r.StartedAt, r.Label = m, time.Unix(int64(1000+i), 0), "nightly"
			id, err := s.StartRun(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.FinishRun(ctx, id, StatusCompleted, ""); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		newest, err := s.GetRun(ctx, ids[1])
		if err != nil {
			t.Fatal(err)
		}
		prev, err := s.PreviousOfScenario(ctx, newest)
		if err != nil || prev.ID != ids[0] || prev.Machine != "runner-a" || newest.Machine != "runner-b" {
			t.Errorf("baseline of runner-b's run: %+v, %v", prev, err)
		}
		if r, err := s.FindRun(ctx, "nightly"); err != nil || r.ID != ids[1] {
			t.Errorf("label nightly names run %d, %v; want the newest, %d", r.ID, err, ids[1])
		}
	})
}

// TestCopyRunningRun copies a run still running (a rescue file's, say):
// it stays running in the copy, with no end time.
func TestCopyRunningRun(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ string) {
		r := sampleRun()
		id, err := s.StartRun(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		r, err = s.GetRun(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		file, err := Open(t.Context(), filepath.Join(t.TempDir(), "export.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		if got, err := file.Copy(t.Context(), s, []Run{r}); err != nil || got.Runs != 1 {
			t.Fatalf("copy: %+v, %v", got, err)
		}
		runs, err := file.AllRuns(t.Context())
		if err != nil || len(runs) != 1 {
			t.Fatalf("runs %v, %v", runs, err)
		}
		if got := runs[0]; got.Status != StatusRunning || !got.FinishedAt.IsZero() {
			t.Errorf("copied run: status %s, finished %v; want running, not finished", got.Status, got.FinishedAt)
		}
	})
}
