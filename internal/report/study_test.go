package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/store"
)

// studyFixture stores two studies of fault × keep-dead (stop, kill × 1s,
// 5s), each run with 8 cycles. In "sdk-1.0" recovery grows with keep-dead
// for kill only; "sdk-1.1" is 300 ms slower for stop at 5s and the same
// elsewhere; and its kill/5s run was interrupted before it ended, with no
// completed one.
func studyFixture(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), dbRef(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	base := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	cells := []store.StudyCell{{Fault: "kill", KeepDead: "5s", Devices: 1}, {Fault: "stop", KeepDead: "1s", Devices: 1},
		{Fault: "stop", KeepDead: "5s", Devices: 1}, {Fault: "kill", KeepDead: "1s", Devices: 1}}
	at := base
	for s, label := range []string{"sdk-1.0", "sdk-1.1"} {
		plan, _ := json.Marshal(store.StudyPlan{Cells: cells, Settings: map[string]string{"MTTR_KEEP_ALIVE": "15s"}})
		id, err := st.CreateStudy(t.Context(), store.Study{Label: label, Seed: uint64(42 + s), PlanJSON: string(plan), StartedAt: at})
		if err != nil {
			t.Fatal(err)
		}
		for pos, c := range cells {
			kd, _ := time.ParseDuration(c.KeepDead)
			median := 500.0
			if c.Fault == "kill" && kd == 5*time.Second {
				median = 2000
			}
			if label == "sdk-1.1" && c.Fault == "stop" && kd == 5*time.Second {
				median += 300
			}
			status := store.StatusCompleted
			if label == "sdk-1.1" && c.Fault == "kill" && kd == 5*time.Second {
				status = store.StatusInterrupted
			}
			at = at.Add(time.Hour)
			run, err := st.StartRun(t.Context(), store.Run{StartedAt: at, Label: label, Fault: c.Fault, KeepAlive: 15 * time.Second, KeepDead: kd,
				KeepRunning: time.Second, Devices: 1, CyclesPlanned: 8, ConfigJSON: "{}", StudyID: id, StudyPosition: pos + 1})
			if err != nil {
				t.Fatal(err)
			}
			for n := range 8 {
				fault := at.Add(time.Duration(n+1) * time.Minute).UnixNano()
				cy := mttr.Cycle{Cycle: n + 1, Device: "d", FaultAt: fault, HealedAt: fault + kd.Nanoseconds(), Published: 1, Acknowledged: 1, Delivered: 1}
				cy.ReadyAt = cy.HealedAt + 100e6
				cy.FirstAckAt = cy.ReadyAt + int64((median+float64(n%4*10))*1e6)
				if status == store.StatusInterrupted && n >= 3 {
					cy.Interrupted, cy.FirstAckAt, cy.Error = true, 0, "interrupted before recovery"
				}
				if err := st.SaveCycle(t.Context(), run, []mttr.Cycle{cy}); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.FinishRun(t.Context(), run, status, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	return st
}

func buildStudy(t *testing.T, st *store.Store, label string) *StudyReport {
	t.Helper()
	rep, err := BuildStudy(t.Context(), st, label, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	rep.DB = "results/mttr.db"
	return rep
}

func TestGoldenStudy(t *testing.T) {
	backends(t, func(t *testing.T) {
		st := studyFixture(t)
		rep := buildStudy(t, st, "sdk-1.0")
		rep.Chart = "results/study-sdk-1.0.svg"
		if rep.Completed != 4 || rep.Planned != 4 || len(rep.Cells) != 4 {
			t.Fatalf("completed %d of %d, %d cells", rep.Completed, rep.Planned, len(rep.Cells))
		}
		for _, format := range []string{"text", "markdown", "csv", "json"} {
			t.Run(format, func(t *testing.T) {
				var b bytes.Buffer
				if err := WriteStudy(&b, rep, format); err != nil {
					t.Fatal(err)
				}
				golden(t, "study."+map[string]string{"text": "txt", "markdown": "md", "csv": "csv", "json": "json"}[format], b.Bytes())
				if format != "csv" && !strings.Contains(b.String(), rep.Chart) {
					t.Errorf("%s output does not point to the chart", format)
				}
			})
		}
		var page bytes.Buffer
		if err := WriteStudyHTML(&page, rep); err != nil {
			t.Fatal(err)
		}
		svgs := svgElement.FindAllString(page.String(), -1)
		if len(svgs) != 1 {
			t.Fatalf("%d charts in the study page, want 1", len(svgs))
		}
		// Two lines (kill, stop), each with its confidence band.
		if n := strings.Count(svgs[0], "kill") + strings.Count(svgs[0], "stop"); n < 2 {
			t.Errorf("the chart's legend names %d faults", n)
		}
		golden(t, "study.html", []byte(svgElement.ReplaceAllString(page.String(), "<svg>…</svg>")))

		// The newest study when none is named; a cell with only an
		// interrupted run shows it, and counts as not completed.
		latest := buildStudy(t, st, "")
		if latest.Label != "sdk-1.1" || latest.Completed != 3 {
			t.Errorf("latest study %s, %d completed", latest.Label, latest.Completed)
		}
		if _, err := BuildStudy(t.Context(), st, "nope", 0.05); err == nil || !strings.Contains(err.Error(), `study "nope": no such study`) {
			t.Errorf("unknown study: %v", err)
		}
	})
}

func TestGoldenStudyCompare(t *testing.T) {
	backends(t, func(t *testing.T) {
		st := studyFixture(t)
		c, err := CompareStudies(t.Context(), st, "sdk-1.0", "sdk-1.1", 0.05)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := WriteStudyComparison(&b, c, "text"); err != nil {
			t.Fatal(err)
		}
		golden(t, "study-compare.txt", b.Bytes())
		sig := map[string]bool{}
		for _, cell := range c.Cells {
			sig[cell.Cell] = cell.Recovery.Significant
		}
		want := map[string]bool{"fault kill, keep-dead 1s, 1 device(s)": false, "fault kill, keep-dead 5s, 1 device(s)": false,
			"fault stop, keep-dead 1s, 1 device(s)": false, "fault stop, keep-dead 5s, 1 device(s)": true}
		if fmt.Sprint(sig) != fmt.Sprint(want) {
			t.Errorf("significant cells %v, want %v", sig, want)
		}
	})
}

// TestGoldenStudyCharts checks the study's chart byte for byte, and the
// comparison of two studies in its other formats.
func TestGoldenStudyCharts(t *testing.T) {
	st := studyFixture(t)
	chart, err := StudyChart(buildStudy(t, st, "sdk-1.0"))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "study-chart.svg", []byte(chart))
	c, err := CompareStudies(t.Context(), st, "sdk-1.0", "sdk-1.1", 0.05)
	if err != nil {
		t.Fatal(err)
	}
	c.Old.DB, c.New.DB = "results/mttr.db", "results/mttr.db" // the temporary path would differ every run
	for _, format := range []string{"markdown", "csv", "json"} {
		var b bytes.Buffer
		if err := WriteStudyComparison(&b, c, format); err != nil {
			t.Fatal(err)
		}
		golden(t, "study-compare."+map[string]string{"markdown": "md", "csv": "csv", "json": "json"}[format], b.Bytes())
	}
}
