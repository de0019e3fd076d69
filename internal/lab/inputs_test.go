package lab

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/config"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/store"
)

// oneRunDB is an SQLite database with one completed run of three cycles.
func oneRunDB(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mttr.db")
	st, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	base := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	id, err := st.StartRun(t.Context(), store.Run{StartedAt: base, Fault: "stop", KeepAlive: 15 * time.Second,
		KeepDead: time.Second, KeepRunning: time.Second, Devices: 1, CyclesPlanned: 3, ConfigJSON: "{}"})
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 3; n++ {
		f := base.Add(time.Duration(n) * time.Minute).UnixNano()
		c := mttr.Cycle{Cycle: n, Device: "d", FaultAt: f, HealedAt: f + 1e9, ReadyAt: f + 1e9, FirstAckAt: f + 2e9, Published: 1, Acknowledged: 1, Delivered: 1}
		if err := st.SaveCycle(t.Context(), id, []mttr.Cycle{c}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.FinishRunAt(t.Context(), id, store.StatusCompleted, "", base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestErrorsNameTheInput guards that a bad argument or setting of export,
// import and report is refused in one line that names the input the user
// gave (the file argument, the run list, MTTR_DB, MTTR_HTML) and what is
// wrong with it, and that nothing is written where it should not be.
func TestErrorsNameTheInput(t *testing.T) {
	db := oneRunDB(t)
	dir := t.TempDir()
	newLab := func() *Lab {
		l := &Lab{Config: config.Defaults, Out: new(bytes.Buffer), Err: new(bytes.Buffer)}
		l.Config.DB, l.Config.HTML = db, filepath.Join(t.TempDir(), "report.html")
		return l
	}
	for _, tc := range []struct {
		name string
		do   func(l *Lab) error
		want string
		not  string
	}{
		{"export to a directory", func(l *Lab) error { return l.Export(t.Context(), "1", dir) },
			"export to " + dir + ": store " + dir + ": is a directory; name a file", "MTTR_DB"},
		{"export an empty member", func(l *Lab) error { return l.Export(t.Context(), "1,,2", filepath.Join(dir, "out.db")) },
			`export "1,,2": member 2 of 3 is empty`, ""},
		{"export a repeated member", func(l *Lab) error { return l.Export(t.Context(), "1,1", filepath.Join(dir, "out.db")) },
			`export "1,1": "1" named twice`, ""},
		{"export to another scheme", func(l *Lab) error { return l.Export(t.Context(), "1", "mysql://root:SECRET@127.0.0.1/x") },
			`export to mysql://root:xxxxx@127.0.0.1/x: store: "mysql://root:xxxxx@127.0.0.1/x": a mysql URL`, "SECRET"},
		{"import from another scheme", func(l *Lab) error { return l.Import(t.Context(), "mysql://root:SECRET@127.0.0.1/x") },
			`import mysql://root:xxxxx@127.0.0.1/x: store: "mysql://root:xxxxx@127.0.0.1/x": a mysql URL`, "SECRET"},
		{"MTTR_DB a directory", func(l *Lab) error { l.Config.DB = dir; return l.Report(t.Context()) },
			"MTTR_DB: store " + dir + ": is a directory; name a file", ""},
		{"MTTR_HTML a directory", func(l *Lab) error { l.Config.HTML = dir; return l.Report(t.Context()) },
			"MTTR_HTML: " + dir + " is a directory; name a file", "rename"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do(newLab())
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") ||
				(tc.not != "" && strings.Contains(err.Error(), tc.not)) {
				t.Errorf("error %v, want one line with %q", err, tc.want)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left in %s: %v", dir, entries)
	}
}

// TestClientLogsOfTwoDatabases guards that the client logs of two
// databases in one directory, or of two PostgreSQL databases beside one
// report, never share a name, whatever their run ids.
func TestClientLogsOfTwoDatabases(t *testing.T) {
	for _, pair := range [][2]string{
		{"/r/a.db", "/r/b.db"},
		{"/r/a.db", "/r/a.sqlite"},
		{"postgres://u@h1/x", "postgres://u@h2/x"},
		{"postgres://u@h/x", "postgresql://u@h/y"},
	} {
		one, two := clientLog(pair[0], "/r/report.html", 1), clientLog(pair[1], "/r/report.html", 1)
		if one == two {
			t.Errorf("%s and %s: both log run 1 to %s", pair[0], pair[1], one)
		}
	}
	if got, want := clientLog("/r/mttr.db", "", 7), "/r/mttr.db-clients-run-7.log"; got != want {
		t.Errorf("clientLog = %q, want %q", got, want)
	}
	if got, want := clientLog("postgres://u:pw@db.example:5432/mttr?sslmode=x", "/r/report.html", 7), "/r/postgres-db.example-mttr-clients-run-7.log"; got != want {
		t.Errorf("clientLog = %q, want %q", got, want)
	}
}
