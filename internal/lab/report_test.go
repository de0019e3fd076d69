package lab

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/config"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/store"
)

func TestReportCommands(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Defaults
	cfg.DB = filepath.Join(dir, "mttr.db")
	cfg.HTML = filepath.Join(dir, "out", "report.html")
	var out, errs strings.Builder
	l := &Lab{Config: cfg, Out: &out, Err: &errs}

	if err := l.Report(t.Context()); err == nil || !strings.Contains(err.Error(), "make a run with `mage mttr`") {
		t.Fatalf("report without a database = %v", err)
	}
	if _, err := os.Stat(cfg.DB); !os.IsNotExist(err) {
		t.Errorf("report created the database: %v", err)
	}

	writeRuns(t, cfg.DB, 2)
	before, _ := os.ReadFile(cfg.DB)

	l.Config.Format = "csv"
	if err := l.Report(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "run_id,label,fault,cycle,device,") || strings.Contains(out.String(), "HTML report") {
		t.Errorf("csv output %q", out.String())
	}
	if !strings.Contains(errs.String(), "HTML report: "+cfg.HTML) {
		t.Errorf("path not printed on the error stream: %q", errs.String())
	}
	if page, err := os.ReadFile(cfg.HTML); err != nil || !strings.Contains(string(page), "<svg") {
		t.Errorf("html page: %v", err)
	}
	if after, _ := os.ReadFile(cfg.DB); string(after) != string(before) {
		t.Error("report changed the database file")
	}

	out.Reset()
	l.Config.Format = "text"
	if err := l.Compare(t.Context(), "v1", "v2"); err != nil || !strings.Contains(out.String(), "run 1 (v1) vs run 2 (v2)") {
		t.Errorf("compare = %v\n%s", err, out.String())
	}
	if err := l.Compare(t.Context(), "v1", "v7"); err == nil || !strings.Contains(err.Error(), `run "v7": no such run`) {
		t.Errorf("compare with an unknown label = %v", err)
	}

	out.Reset()
	l.Config.MaxP95 = 150 * time.Millisecond
	err := l.Check(t.Context())
	if err == nil || !strings.Contains(out.String(), "FAIL  recovery p95 200 ms exceeds MTTR_MAX_P95=150 ms") {
		t.Errorf("check = %v\n%s", err, out.String())
	}
	out.Reset()
	l.Config.MaxP95 = time.Second
	if err := l.Check(t.Context()); err != nil {
		t.Errorf("check within the limit = %v\n%s", err, out.String())
	}
}

// writeRuns stores n completed one-cycle runs labelled v1, v2, ... in a new
// database at path; run i recovered in i × 100 ms.
func writeRuns(t *testing.T, path string, n int) {
	t.Helper()
	w, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 1; i <= n; i++ {
		id, err := w.StartRun(t.Context(), store.Run{StartedAt: time.Unix(int64(1e9+i), 0), Label: "v" + strconv.Itoa(i), Fault: "stop",
			KeepDead: time.Second, Devices: 1, CyclesPlanned: 1, ConfigJSON: "{}"})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.SaveCycle(t.Context(), id, []mttr.Cycle{{Cycle: 1, Device: "d", FaultAt: 1e9, HealedAt: 2e9, ReadyAt: 2e9, FirstAckAt: 2e9 + int64(i)*1e8}}); err != nil {
			t.Fatal(err)
		}
		if err := w.FinishRun(t.Context(), id, store.StatusCompleted, ""); err != nil {
			t.Fatal(err)
		}
	}
}
