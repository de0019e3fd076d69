package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/pgtest"
)

func open(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sub", "mttr.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// backends runs fn as a subtest against each backend: an SQLite file, and
// a PostgreSQL schema of the test's own where there is a server
// (pgtest), with the store open and the reference (path or URL) it was
// opened with.
func backends(t *testing.T, fn func(t *testing.T, s *Store, ref string)) {
	t.Run("sqlite", func(t *testing.T) {
		s, path := open(t)
		fn(t, s, path)
	})
	t.Run("postgres", func(t *testing.T) {
		ref := pgtest.URL(t)
		s, err := Open(t.Context(), ref)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		fn(t, s, ref)
	})
}

func sampleRun() Run {
	return Run{
		StartedAt: time.Unix(1700000000, 5), Label: "baseline", Fault: "stop",
		KeepAlive: 15 * time.Second, KeepDead: 7500 * time.Millisecond, KeepRunning: 10 * time.Second,
		Devices: 2, CyclesPlanned: 3, ConfigJSON: `{"fault":"stop"}`, ToolVersion: "test",
		EngineVersion: "20.10", ImageID: "sha256:1", Host: "localhost", Machine: "m", PID: 42,
	}
}

func TestRunLifecycle(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ string) {
		ctx := t.Context()
		id, err := s.StartRun(ctx, sampleRun())
		if err != nil {
			t.Fatal(err)
		}
		rows := []mttr.Cycle{
			{Cycle: 1, Device: "d", FaultAt: 1_000_000_000, LostAt: 1_010_000_000, HealedAt: 2_000_000_000,
				ListeningAt: 2_080_000_000, HeldUntilAt: 2_090_000_000, ReadyAt: 2_100_000_000,
				ReconnectedAt: 2_600_000_000, FirstAckAt: 2_700_000_000, LastAckBeforeAt: 900_000_000, ReconnectAttempts: 2,
				AttemptAt: 2_550_000_000, BrokerAddress: "172.18.0.3", BrokerAcceptPeak: 812, PubackMedian: 12_345_678,
				Bed: mttr.BedCost{Window: 3_000_000_001, Tool: 30_000_002, Broker: 20_000_003, Clients: 10_000_004, Host: 90_000_005, Cores: 6, Late: 1_000_007}, Published: 4, Acknowledged: 4, Delivered: 4,
				Listens: true, ResubscribedAt: 2_605_000_000, CommandsBackAt: 2_102_000_000, FirstC2DAt: 2_610_000_000, Session: mttr.SessionNew,
				C2DSent: 5, C2DReceived: 3, C2DLost: 1, C2DDuplicated: 1},
			{Cycle: 1, Device: "d-2", FaultAt: 1_000_000_000, HealedAt: 2_000_000_000, ReadyAt: 2_100_000_000, Error: "interrupted before recovery", Interrupted: true,
				Bed: mttr.BedCost{Window: 1, Broker: -1, Cores: 2}},
		}
		if err := s.SaveCycle(ctx, id, rows); err != nil {
			t.Fatal(err)
		}
		got, err := s.Cycles(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0] != rows[0] || got[1] != rows[1] {
			t.Errorf("Cycles =\n%+v\nwant\n%+v", got, rows)
		}
		var recovery, detection, outage, path float64
		var missing any
		err = s.DB().QueryRowContext(ctx, `SELECT recovery_ms, detection_ms, outage_ms, path_ms FROM cycles WHERE device = 'd'`).Scan(&recovery, &detection, &outage, &path)
		if err != nil || recovery != 600 || detection != 10 || outage != 1800 || path != 20 {
			t.Errorf("derived = %v %v %v %v, %v; want 600 10 1800 20", recovery, detection, outage, path, err)
		}
		if err := s.DB().QueryRowContext(ctx, `SELECT recovery_ms FROM cycles WHERE device = 'd-2'`).Scan(&missing); err != nil || missing != nil {
			t.Errorf("recovery_ms of a device without first ack = %v, %v; want NULL", missing, err)
		}
		if err := s.SaveCycle(ctx, id, rows[:1]); err == nil || !IsDuplicate(err) {
			t.Errorf("saving the same cycle twice: %v, want a duplicate", err)
		}
		if err := s.FinishRun(ctx, id, StatusCompleted, ""); err != nil {
			t.Fatal(err)
		}
		r, err := s.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != StatusCompleted || r.FinishedAt.IsZero() || r.KeepDead != 7500*time.Millisecond || r.Label != "baseline" || r.PID != 42 ||
			r.Client != "paho" || r.ClockOffset != 0 {
			t.Errorf("run = %+v", r)
		}
	})
}

func TestStatusIsChecked(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ string) {
		id, err := s.StartRun(t.Context(), sampleRun())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.FinishRun(t.Context(), id, "done", ""); err == nil {
			t.Error("an unknown status was stored")
		}
	})
}

// TestCommitPerCycleVisibleToReader checks that a second connection, as a
// report would open it, sees each cycle as soon as SaveCycle returns, while
// the writer keeps its database open.
func TestCommitPerCycleVisibleToReader(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, path string) {
		ctx := t.Context()
		id, err := s.StartRun(ctx, sampleRun())
		if err != nil {
			t.Fatal(err)
		}
		r, err := OpenReadOnly(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for i := 1; i <= 3; i++ {
			if err := s.SaveCycle(ctx, id, []mttr.Cycle{{Cycle: i, Device: "d"}}); err != nil {
				t.Fatal(err)
			}
			got, err := r.Cycles(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != i {
				t.Fatalf("reader sees %d cycles after %d commits", len(got), i)
			}
		}
		if _, err := r.StartRun(ctx, sampleRun()); err == nil {
			t.Error("read-only store accepted a write")
		}
	})
}

// A path whose names hold what a URI reserves is a path like any other,
// and nothing is written anywhere else.
func TestOddPaths(t *testing.T) {
	for _, name := range []string{"loss=100%", "a?b#c", "with space", "%41"} {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "mttr.db")
		s, err := Open(t.Context(), path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if _, err := s.StartRun(t.Context(), sampleRun()); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		s.Close()
		r, err := OpenReadOnly(t.Context(), path)
		if err != nil {
			t.Fatalf("%s: read-only: %v", path, err)
		}
		r.Close()
		entries, _ := os.ReadDir(filepath.Dir(dir))
		if len(entries) != 1 {
			t.Errorf("%s: the directory around it holds %d entries, want only %q", path, len(entries), name)
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	s, path := open(t)
	id, err := s.StartRun(t.Context(), sampleRun())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if v, err := s2.Version(t.Context()); err != nil || v != Latest() {
		t.Errorf("version %d, %v; want %d", v, err, Latest())
	}
	running, err := s2.Running(t.Context())
	if err != nil || len(running) != 1 || running[0].ID != id || running[0].PID != 42 {
		t.Errorf("Running = %+v, %v", running, err)
	}
}

func TestRejectsForeignAndNewer(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("hello, this is not sqlite at all, just some words\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReadOnly(t.Context(), text); !errors.Is(err, ErrNotMTTR) {
		t.Errorf("OpenReadOnly(text file) = %v, want ErrNotMTTR", err)
	}
	if _, err := Open(t.Context(), text); err == nil {
		t.Error("Open(text file) succeeded")
	}

	_, path := open(t)
	raw, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.DB().Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES (?, 1)`, Latest()+1); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if _, err := Open(context.Background(), path); !errors.Is(err, ErrNewerSchema) {
		t.Errorf("Open(newer schema) = %v, want ErrNewerSchema", err)
	}

	other := filepath.Join(dir, "other.db")
	s, err := Open(t.Context(), other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB().Exec(`DROP TABLE goose_db_version`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := OpenReadOnly(t.Context(), other); err == nil || !strings.Contains(err.Error(), ErrNotMTTR.Error()) {
		t.Errorf("OpenReadOnly(sqlite without version table) = %v", err)
	}
	if _, err := OpenReadOnly(t.Context(), filepath.Join(dir, "missing.db")); err == nil {
		t.Error("OpenReadOnly(missing file) succeeded")
	}
}

func TestQueries(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ string) {
		ctx := t.Context()
		mk := func(label, fault string, dead time.Duration, status string) int64 {
			r := sampleRun()
			r.Label, r.Fault, r.KeepDead = label, fault, dead
			id, err := s.StartRun(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if status != StatusRunning {
				if err := s.FinishRun(ctx, id, status, ""); err != nil {
					t.Fatal(err)
				}
			}
			return id
		}
		a := mk("v1", "stop", time.Second, StatusCompleted)
		mk("v1", "pause", time.Second, StatusCompleted)
		c := mk("v2", "stop", time.Second, StatusFailed)
		d := mk("3", "stop", time.Second, StatusCompleted)

		for ref, want := range map[string]int64{"v1": 2, "v2": c, "1": a, "3": 3} {
			r, err := s.FindRun(ctx, ref)
			if err != nil || r.ID != want {
				t.Errorf("FindRun(%q) = %d, %v; want %d", ref, r.ID, err, want)
			}
		}
		if _, err := s.FindRun(ctx, "v9"); !errors.Is(err, ErrNoRun) {
			t.Errorf("FindRun(unknown) = %v", err)
		}
		latest, err := s.LatestCompleted(ctx)
		if err != nil || latest.ID != d {
			t.Fatalf("LatestCompleted = %d, %v", latest.ID, err)
		}
		prev, err := s.PreviousOfScenario(ctx, latest)
		if err != nil || prev.ID != a {
			t.Errorf("PreviousOfScenario = %d, %v; want %d (same fault, completed)", prev.ID, err, a)
		}
		if _, err := s.PreviousOfScenario(ctx, prev); !errors.Is(err, ErrNoRun) {
			t.Errorf("PreviousOfScenario(first) = %v", err)
		}
		runs, err := s.Runs(ctx, 2)
		if err != nil || len(runs) != 2 || runs[0].ID != d {
			t.Errorf("Runs(2) = %v, %v", runs, err)
		}
	})
}

// TestGeneratedColumnsMirrorMethods checks that the generated columns, kept
// for ad-hoc SQL, say what the Cycle methods say, for every combination of
// present and missing times.
func TestGeneratedColumnsMirrorMethods(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ string) {
		ctx := t.Context()
		id, err := s.StartRun(ctx, sampleRun())
		if err != nil {
			t.Fatal(err)
		}
		full := mttr.Cycle{FaultAt: 1e9, LostAt: 1.002e9, HealedAt: 1.9e9, ListeningAt: 1.95e9, ReadyAt: 2e9, FirstAckAt: 2.5e9, LastAckBeforeAt: 0.5e9,
			Listens: true, FirstC2DAt: 2.4e9}
		resumed := full
		resumed.ListeningAt, resumed.ResumedAt = 0, 1.99e9
		deaf := full
		deaf.FirstC2DAt = 0
		noDownstream := full
		noDownstream.Listens = false
		senderLate := full
		senderLate.CommandsBackAt = 2.1e9
		var rows []mttr.Cycle
		notReady := full
		notReady.ReadyAt = 0
		for i, c := range []mttr.Cycle{full, resumed, deaf, noDownstream, senderLate, notReady, {FaultAt: 1e9, ReadyAt: 2e9}, {LostAt: 1e9, FirstAckAt: 2e9}, {}} {
			c.Cycle, c.Device = 1, fmt.Sprintf("d-%d", i)
			rows = append(rows, c)
		}
		if err := s.SaveCycle(ctx, id, rows); err != nil {
			t.Fatal(err)
		}
		for _, c := range rows {
			var got [5]sql.NullFloat64
			if err := s.DB().QueryRowContext(ctx, s.rebind(`SELECT recovery_ms, detection_ms, outage_ms, path_ms, downstream_ms FROM cycles WHERE device = ?`), c.Device).
				Scan(&got[0], &got[1], &got[2], &got[3], &got[4]); err != nil {
				t.Fatal(err)
			}
			for i, m := range []func() (time.Duration, bool){c.Recovery, c.Detection, c.Outage, c.Path, c.Downstream} {
				d, ok := m()
				if got[i].Valid != ok || (ok && got[i].Float64 != float64(d)/1e6) {
					t.Errorf("%s: column %d = %+v, method = %v %v", c.Device, i, got[i], d, ok)
				}
			}
		}
	})
}

// TestMigratesVersion1 opens a database written with the first schema and
// checks that its runs survive the migration to the latest.
func TestMigratesVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		t.Fatal(err)
	}
	p, err := (&Store{db: db, path: path}).provider()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO runs (started_at, fault, keep_alive_ms, keep_dead_ms, keep_running_ms, devices, cycles_planned,
		config_json, tool_version, engine_version, image_id, host) VALUES (1, 'stop', 1, 1, 1, 1, 1, '{}', 't', 'e', 'i', 'h')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := OpenReadOnly(t.Context(), path); err == nil || !strings.Contains(err.Error(), "run `mage mttr` once to migrate it") {
		t.Errorf("reading an old schema = %v", err)
	}
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, _ := s.Version(t.Context()); v != Latest() || Latest() < 2 {
		t.Errorf("version %d after Open, latest %d", v, Latest())
	}
	r, err := s.GetRun(t.Context(), 1)
	if err != nil || r.Client != "paho" || r.Fault != "stop" || r.Broker != "docker" || r.NetNS != "plain" {
		t.Errorf("old run after migration: %+v, %v", r, err)
	}
}

// TestRedactsStoredKeys opens a database holding a run stored with its
// connection string's key in the clear and checks that the key is gone.
func TestRedactsStoredKeys(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, path string) {
		const key = "c2VjcmV0LWtleS0xMjM="
		r := sampleRun()
		r.ConfigJSON = `{"MTTR_CONNECTION_STRING":"HostName=h;DeviceId=d;SharedAccessKey=` + key + `","MTTR_FAULT":"stop"}`
		id, err := s.StartRun(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		again, err := Open(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		got, err := again.GetRun(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(got.ConfigJSON, key) || !strings.Contains(got.ConfigJSON, "SharedAccessKey=<redacted sha256:") ||
			!strings.Contains(got.ConfigJSON, `"MTTR_FAULT":"stop"`) {
			t.Errorf("config_json after reopening: %s", got.ConfigJSON)
		}
	})
}

// TestRefusesWithoutTouching gives Open another application's SQLite file
// and a directory: both are refused with what is wrong, and the file is
// byte-identical afterwards (not switched to WAL).
func TestRefusesWithoutTouching(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "app.db")
	db, err := sql.Open("sqlite", "file:"+foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hello')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	before, err := os.ReadFile(foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), foreign); !errors.Is(err, ErrNotMTTR) {
		t.Errorf("Open(another application's database) = %v, want %v", err, ErrNotMTTR)
	}
	after, err := os.ReadFile(foreign)
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Error("the refused file changed")
	}
	for _, side := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(foreign + side); err == nil {
			t.Errorf("refusing left %s behind", foreign+side)
		}
	}
	if _, err := Open(t.Context(), dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("Open(a directory) = %v", err)
	}
	if _, err := OpenReadOnly(t.Context(), dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("OpenReadOnly(a directory) = %v", err)
	}
}

// TestPreviousOfScenarioNetwork compares a run only with runs whose
// network path did the same: the same link and the same fault parameter.
func TestPreviousOfScenarioNetwork(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ string) {
		ctx := t.Context()
		mk := func(fault, vars string) Run { return completedRun(t, s, fault, vars) }
		slow := mk("latency", `{"MTTR_LATENCY":"200ms","MTTR_JITTER":"0s"}`)
		mk("latency", `{"MTTR_LATENCY":"500ms","MTTR_JITTER":"0s"}`)
		mk("latency", `{"MTTR_LATENCY":"200ms","MTTR_JITTER":"0s","MTTR_LINK":"latency=100ms"}`)
		newest := mk("latency", `{"MTTR_LATENCY":"200ms","MTTR_JITTER":"0s"}`)
		if got := newest.Network(); got != "latency 200ms" {
			t.Errorf("Network() = %q, want %q", got, "latency 200ms")
		}
		prev, err := s.PreviousOfScenario(ctx, newest)
		if err != nil || prev.ID != slow.ID {
			t.Errorf("PreviousOfScenario = %d, %v; want %d (the same latency, no link)", prev.ID, err, slow.ID)
		}
		jittery := mk("latency", `{"MTTR_LATENCY":"200ms","MTTR_JITTER":"50ms","MTTR_LINK":"3g"}`)
		if got := jittery.Network(); got != "link 3g, latency 200ms ± 50ms" {
			t.Errorf("Network() = %q", got)
		}
		if _, err := s.PreviousOfScenario(ctx, jittery); !errors.Is(err, ErrNoRun) || !strings.Contains(err.Error(), "link 3g, latency 200ms ± 50ms") {
			t.Errorf("PreviousOfScenario(a path of its own) = %v, want ErrNoRun naming the path", err)
		}
		if got := (Run{Fault: "stop", ConfigJSON: `{"MTTR_LOSS":"30%"}`}).Network(); got != "" {
			t.Errorf("a broker fault on a plain path: Network() = %q, want empty", got)
		}
	})
}

// TestPreviousOfScenarioDeviceTLS compares a run of our devices only with
// runs whose devices had the same TLS policy; external clients bring their
// own, so the settings do not separate their runs.
func TestPreviousOfScenarioDeviceTLS(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ string) {
		ctx := t.Context()
		mk := func(vars string) Run { return completedRun(t, s, sampleRun().Fault, vars) }
		plain := mk(`{"MTTR_TLS_RESUMPTION":"false","MTTR_TLS_GROUPS":""}`)
		resuming := mk(`{"MTTR_TLS_RESUMPTION":"true","MTTR_TLS_GROUPS":"X25519"}`)
		mk(`{"MTTR_TLS_RESUMPTION":"true","MTTR_TLS_GROUPS":""}`)
		newest := mk(`{"MTTR_TLS_RESUMPTION":"false","MTTR_TLS_GROUPS":""}`)
		if prev, err := s.PreviousOfScenario(ctx, newest); err != nil || prev.ID != plain.ID {
			t.Errorf("PreviousOfScenario = %d, %v; want %d (the default policy)", prev.ID, err, plain.ID)
		}
		if got := resuming.DeviceTLS(); got != "TLS resumption, TLS groups X25519" {
			t.Errorf("DeviceTLS() = %q", got)
		}
		again := mk(`{"MTTR_TLS_RESUMPTION":"true","MTTR_TLS_GROUPS":"X25519"}`)
		if prev, err := s.PreviousOfScenario(ctx, again); err != nil || prev.ID != resuming.ID {
			t.Errorf("PreviousOfScenario = %d, %v; want %d (the same policy)", prev.ID, err, resuming.ID)
		}
		if got := (Run{ConfigJSON: `{"MTTR_CLIENT":"external","MTTR_TLS_RESUMPTION":"true"}`}).DeviceTLS(); got != "" {
			t.Errorf("an external client's run: DeviceTLS() = %q, want empty", got)
		}
	})
}

// completedRun stores a completed sample run of fault with the settings
// vars, and reads it back.
func completedRun(t *testing.T, s *Store, fault, vars string) Run {
	t.Helper()
	r := sampleRun()
	r.Fault, r.ConfigJSON = fault, vars
	id, err := s.StartRun(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.FinishRun(t.Context(), id, StatusCompleted, ""); err != nil {
		t.Fatal(err)
	}
	stored, err := s.GetRun(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return stored
}
