package lab

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/config"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/pgtest"
	"github.com/mttrlab/mttr/internal/report"
	"github.com/mttrlab/mttr/internal/store"
)

// TestExportImport exports a run by its label to an SQLite file, imports
// the file into another database (PostgreSQL when there is a test server)
// twice, and checks that the run's statistics and cycles are the same
// there and that it was imported once.
func TestExportImport(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src.db")
	st, err := store.Open(t.Context(), src)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	id, err := st.StartRun(t.Context(), store.Run{StartedAt: base, Label: "nightly", Fault: "stop", KeepAlive: 15 * time.Second,
		KeepDead: time.Second, KeepRunning: time.Second, Devices: 1, CyclesPlanned: 10, ConfigJSON: "{}", Machine: "runner-7", PID: 4242})
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 10; n++ {
		f := base.Add(time.Duration(n) * time.Minute).UnixNano()
		c := mttr.Cycle{Cycle: n, Device: "d", FaultAt: f, HealedAt: f + 1e9, ReadyAt: f + 1e9, FirstAckAt: f + 1e9 + int64(400+37*n%90)*1e6,
			Published: 3, Acknowledged: 3, Delivered: 3}
		if err := st.SaveCycle(t.Context(), id, []mttr.Cycle{c}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.FinishRunAt(t.Context(), id, store.StatusCompleted, "", base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	st.Close()

	target := filepath.Join(t.TempDir(), "target.db")
	if os.Getenv(pgtest.Env) != "" || pgtest.Required() {
		target = pgtest.URL(t)
	}
	file := filepath.Join(t.TempDir(), "artifact.db")
	var out bytes.Buffer
	l := &Lab{Config: config.Defaults, Out: &out}
	l.Config.DB = src
	if err := l.Export(t.Context(), "nightly", file); err != nil {
		t.Fatal(err)
	}
	l.Config.DB = target
	for range 2 {
		if err := l.Import(t.Context(), file); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"exported 1 runs (10 cycle rows)", "imported 1 runs (10 cycle rows)", "imported 0 runs (0 cycle rows)", "1 it had already"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	summary := func(ref string) report.RunSummary {
		s, err := store.OpenReadOnly(t.Context(), ref)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		rep, err := report.Build(t.Context(), s, report.Options{Last: 10, Alpha: 0.05})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Runs) != 1 {
			t.Fatalf("%s holds %d runs", store.Shown(ref), len(rep.Runs))
		}
		r := rep.Runs[0]
		r.ID = 0
		return r
	}
	got, want := summary(target), summary(src)
	if !reflect.DeepEqual(got.Recovery, want.Recovery) || !reflect.DeepEqual(got.Cycles, want.Cycles) || got.Trend != want.Trend {
		t.Errorf("imported run:\n%+v\nwant\n%+v", got.Recovery, want.Recovery)
	}
	if err := l.Export(t.Context(), "nope", file); err == nil || !strings.Contains(err.Error(), `"nope": no such run`) {
		t.Errorf("export of an unknown label: %v", err)
	}
}
