package report

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/pgtest"
	"github.com/mttrlab/mttr/internal/store"
)

// BenchmarkReportMillionRows builds a database of 1000 runs × 1000 cycle
// rows (10 devices × 100 cycles) and times a full report: the run table,
// the comparison, the text output and the HTML page.
//
//	go test ./internal/report -run '^$' -bench MillionRows -benchtime 3x
func BenchmarkReportMillionRows(b *testing.B) {
	const runs, cycles, devices = 1000, 100, 10
	path := filepath.Join(b.TempDir(), "mttr.db")
	w, err := store.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	tx, err := w.DB().Begin()
	if err != nil {
		b.Fatal(err)
	}
	runStmt, _ := tx.Prepare(`INSERT INTO runs (id, started_at, finished_at, status, fault, keep_alive_ms, keep_dead_ms, keep_running_ms,
		devices, cycles_planned, config_json, tool_version, engine_version, image_id, host) VALUES (?, ?, ?, 'completed', 'stop', 15000, 7500, 10000, ?, ?, '{}', 't', 'e', 'i', 'localhost')`)
	cycStmt, _ := tx.Prepare(`INSERT INTO cycles (run_id, cycle, device, fault_at, lost_at, healed_at, ready_at, reconnected_at, first_ack_at,
		last_ack_before_at, reconnect_attempts, published, acknowledged, delivered) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 6, 6, 6)`)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	for r := 1; r <= runs; r++ {
		if _, err := runStmt.Exec(r, t0+int64(r)*1e12, t0+int64(r)*1e12+1e11, devices, cycles); err != nil {
			b.Fatal(err)
		}
		for c := 1; c <= cycles; c++ {
			for d := 0; d < devices; d++ {
				f := t0 + int64(r)*1e12 + int64(c)*2e10
				rec := int64(400+(r*7+c*13+d*31)%300) * 1e6
				if _, err := cycStmt.Exec(r, c, fmt.Sprintf("dev-%d", d+1), f, f+1e6, f+7.5e9, f+7.6e9, f+7.6e9+rec-2e6, f+7.6e9+rec, f-1e9); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	w.Close()
	b.Logf("built %d cycle rows in %s", runs*cycles*devices, time.Since(start).Round(time.Millisecond))

	st, err := store.OpenReadOnly(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchReport(b, st)
}

// BenchmarkStudyReport builds a study of 100 runs (4 faults × 25
// keep-deads, each run 100 cycles × 10 devices: 100 000 cycle rows) and
// times its report: the table, the chart, the text output and the HTML
// page.
//
//	go test ./internal/report -run '^$' -bench StudyReport -benchtime 3x
func BenchmarkStudyReport(b *testing.B) {
	const cycles, devices = 100, 10
	faults := []string{"stop", "kill", "pause", "blackhole"}
	path := filepath.Join(b.TempDir(), "mttr.db")
	w, err := store.Open(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	var plan store.StudyPlan
	for _, f := range faults {
		for k := 1; k <= 25; k++ {
			plan.Cells = append(plan.Cells, store.StudyCell{Fault: f, KeepDead: (time.Duration(k) * time.Second).String(), Devices: devices})
		}
	}
	js, _ := json.Marshal(plan)
	study, err := w.CreateStudy(context.Background(), store.Study{Label: "bench", Seed: 1, PlanJSON: string(js), StartedAt: time.Now()})
	if err != nil {
		b.Fatal(err)
	}
	tx, err := w.DB().Begin()
	if err != nil {
		b.Fatal(err)
	}
	runStmt, _ := tx.Prepare(`INSERT INTO runs (id, started_at, finished_at, status, fault, keep_alive_ms, keep_dead_ms, keep_running_ms,
		devices, cycles_planned, config_json, tool_version, engine_version, image_id, host, study_id, study_position)
		VALUES (?, ?, ?, 'completed', ?, 15000, ?, 10000, ?, ?, '{}', 't', 'e', 'i', 'localhost', ?, ?)`)
	cycStmt, _ := tx.Prepare(`INSERT INTO cycles (run_id, cycle, device, fault_at, lost_at, healed_at, ready_at, reconnected_at, first_ack_at,
		last_ack_before_at, reconnect_attempts, published, acknowledged, delivered) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 6, 6, 6)`)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	for i, cell := range plan.Cells {
		r := i + 1
		kd, _ := time.ParseDuration(cell.KeepDead)
		if _, err := runStmt.Exec(r, t0+int64(r)*1e12, t0+int64(r)*1e12+1e11, cell.Fault, kd.Milliseconds(), devices, cycles, study, r); err != nil {
			b.Fatal(err)
		}
		for c := 1; c <= cycles; c++ {
			for d := 0; d < devices; d++ {
				f := t0 + int64(r)*1e12 + int64(c)*2e10
				rec := int64(400+(r*7+c*13+d*31)%300)*1e6 + kd.Nanoseconds()/10
				if _, err := cycStmt.Exec(r, c, fmt.Sprintf("dev-%d", d+1), f, f+1e6, f+kd.Nanoseconds(), f+kd.Nanoseconds()+1e8,
					f+kd.Nanoseconds()+1e8+rec-2e6, f+kd.Nanoseconds()+1e8+rec, f-1e9); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	w.Close()
	st, err := store.OpenReadOnly(context.Background(), path)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	b.ReportAllocs()
	for b.Loop() {
		rep, err := BuildStudy(context.Background(), st, "bench", 0.05)
		if err != nil {
			b.Fatal(err)
		}
		if rep.Completed != 100 {
			b.Fatalf("%d runs completed", rep.Completed)
		}
		if err := WriteStudy(io.Discard, rep, "text"); err != nil {
			b.Fatal(err)
		}
		if err := WriteStudyHTML(io.Discard, rep); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReportMillionRowsPostgres is BenchmarkReportMillionRows with the
// rows in PostgreSQL (MTTR_TEST_POSTGRES), made by the server itself.
//
//	MTTR_TEST_POSTGRES=postgres://… go test ./internal/report -run '^$' -bench MillionRowsPostgres -benchtime 3x
func BenchmarkReportMillionRowsPostgres(b *testing.B) {
	const runs, cycles, devices = 1000, 100, 10
	ref := pgtest.URL(b)
	w, err := store.Open(context.Background(), ref)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO runs (id, started_at, finished_at, status, fault, keep_alive_ms, keep_dead_ms, keep_running_ms,
			devices, cycles_planned, config_json, tool_version, engine_version, image_id, host)
			SELECT r, %d + r * 1000000000000, %d + r * 1000000000000 + 100000000000, 'completed', 'stop', 15000, 7500, 10000, %d, %d, '{}', 't', 'e', 'i', 'localhost'
			FROM generate_series(1, %d) AS r`, t0, t0, devices, cycles, runs),
		fmt.Sprintf(`INSERT INTO cycles (run_id, cycle, device, fault_at, lost_at, healed_at, ready_at, reconnected_at, first_ack_at,
			last_ack_before_at, reconnect_attempts, published, acknowledged, delivered)
			SELECT r, c, 'dev-' || (d + 1), f, f + 1000000, f + 7500000000, f + 7600000000, f + 7600000000 + rec - 2000000, f + 7600000000 + rec, f - 1000000000, 1, 6, 6, 6
			FROM generate_series(1, %d) AS r, generate_series(1, %d) AS c, generate_series(0, %d) AS d,
			LATERAL (SELECT %d + r * 1000000000000 + c * 20000000000 AS f, (400 + (r * 7 + c * 13 + d * 31) %% 300) * 1000000 AS rec) AS x`,
			runs, cycles, devices-1, t0),
		`ANALYZE`,
	} {
		if _, err := w.DB().Exec(q); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	b.Logf("built %d cycle rows in %s", runs*cycles*devices, time.Since(start).Round(time.Millisecond))
	st, err := store.OpenReadOnly(context.Background(), ref)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchReport(b, st)
}

// benchReport times a full report of st: the run table, the comparison,
// the text output and the HTML page.
func benchReport(b *testing.B, st *store.Store) {
	b.ReportAllocs()
	for b.Loop() {
		rep, err := Build(context.Background(), st, Options{Last: 20, Alpha: 0.05})
		if err != nil {
			b.Fatal(err)
		}
		if rep.Comparison == nil || len(rep.Runs) != 20 {
			b.Fatalf("report has %d runs, comparison %v", len(rep.Runs), rep.Comparison != nil)
		}
		if err := Write(io.Discard, rep, "text"); err != nil {
			b.Fatal(err)
		}
		if err := WriteHTML(io.Discard, rep); err != nil {
			b.Fatal(err)
		}
	}
}
