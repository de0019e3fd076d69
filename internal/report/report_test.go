package report

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/pgtest"
	"github.com/mttrlab/mttr/internal/stats"
	"github.com/mttrlab/mttr/internal/store"
)

var update = flag.Bool("update", false, "rewrite golden files")

// backends runs fn as a subtest for each backend the fixtures can be
// stored in: "sqlite", and "postgres" where there is a test server
// (pgtest); dbRef tells them apart by the subtest's name.
func backends(t *testing.T, fn func(t *testing.T)) {
	for _, b := range []string{"sqlite", "postgres"} {
		t.Run(b, fn)
	}
}

// dbRef is where a fixture of t is stored: a PostgreSQL schema of its own
// under backends' "postgres" subtest, else an SQLite file.
func dbRef(t testing.TB) string {
	if strings.Contains(t.Name()+"/", "/postgres/") {
		return pgtest.URL(t)
	}
	return filepath.Join(t.TempDir(), "mttr.db")
}

// fixture builds a database with three runs: two completed runs of one
// scenario whose recoveries differ clearly, and a newer interrupted run of
// another scenario with a device that did not recover.
func fixture(t testing.TB) *store.Store {
	t.Helper()
	path := dbRef(t)
	w, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	type runSpec struct {
		label, fault, status, maxReconnect string
		keepDead                           time.Duration
		recoveries                         []float64 // ms; NaN = not recovered; +Inf = cut short by the interrupt; -Inf = deaf: upstream back after 5 ms, no command
	}
	specs := []runSpec{
		{"sdk-1.0", "stop", store.StatusCompleted, "10m0s", 7500 * time.Millisecond, []float64{500, 520, 510, 530, 505, 515, 525, 495}},
		{"sdk-1.1", "stop", store.StatusCompleted, "1s", 7500 * time.Millisecond, []float64{800, 810, 790, 805, 820, 795, 815, 785}},
		{"", "pause", store.StatusInterrupted, "1s", 2 * time.Second, []float64{3, math.NaN(), math.Inf(-1), math.Inf(1)}},
	}
	for i, sp := range specs {
		started := base.Add(time.Duration(i) * time.Hour)
		cfg, _ := json.Marshal(map[string]string{"MTTR_FAULT": sp.fault, "MTTR_MAX_RECONNECT_INTERVAL": sp.maxReconnect, "MTTR_LABEL": sp.label})
		id, err := w.StartRun(context.Background(), store.Run{
			StartedAt: started, Label: sp.label, Fault: sp.fault, KeepAlive: 15 * time.Second, KeepDead: sp.keepDead,
			KeepRunning: 10 * time.Second, Devices: 1, CyclesPlanned: len(sp.recoveries), ConfigJSON: string(cfg),
			ToolVersion: "v0.0.0 test", EngineVersion: "20.10.24 (API 1.41)", ImageID: "sha256:feed", Host: "localhost",
			Broker: "docker", NetNS: "holder",
		})
		if err != nil {
			t.Fatal(err)
		}
		for n, rec := range sp.recoveries {
			fault := started.Add(time.Duration(n+1) * 20 * time.Second).UnixNano()
			c := mttr.Cycle{Cycle: n + 1, Device: "devicemtr", FaultAt: fault, LastAckBeforeAt: fault - 2e9,
				HealedAt: fault + sp.keepDead.Nanoseconds(), Published: 6, Acknowledged: 6, Delivered: 6}
			c.ReadyAt = c.HealedAt + 150e6
			if sp.fault == "stop" {
				c.ListeningAt = c.HealedAt + 140e6
			} else {
				c.ResumedAt = c.ReadyAt - 1e6
			}
			if sp.fault == "stop" {
				c.LostAt = fault + 1e6
				c.ReconnectedAt = c.ReadyAt + int64(rec*1e6) - 2e6
				c.ReconnectAttempts = 1
				c.AttemptAt = c.ReconnectedAt - 3e6
			}
			c.PubackMedian = time.Duration(n+4) * time.Millisecond
			switch {
			case math.IsInf(rec, 1):
				c.FirstAckAt, c.Acknowledged, c.Delivered, c.Lost = 0, 1, 1, 5
				c.Error, c.Interrupted = "interrupted before recovery", true
			case math.IsNaN(rec):
				c.FirstAckAt, c.Acknowledged, c.Delivered, c.Lost = 0, 4, 4, 2
				c.Error = "not recovered within 2m0s"
			case math.IsInf(rec, -1):
				c.FirstAckAt = c.ReadyAt + 5e6
				c.Error = "downstream not recovered within 2m0s"
			default:
				c.FirstAckAt = c.ReadyAt + int64(rec*1e6)
				// Commands come back 600 to 670 ms after ready in every run
				// alike, whatever the upstream did.
				c.FirstC2DAt = c.ReadyAt + int64(600+10*(n%8))*1e6
				c.C2DReceived = 8
			}
			c.Listens, c.C2DSent = true, 10
			if c.ReconnectedAt != 0 {
				c.ResubscribedAt, c.Session = c.ReconnectedAt+3e6, mttr.SessionNew
			}
			if math.IsNaN(rec) {
				c.C2DLost = 1
			}
			if i > 0 { // run 1 predates the bed's measurement
				// A window of keep-dead + 1 s with the host at a quarter of
				// its 2 cores; the pause run's second cycle had its
				// timestamps 30 ms late: bed-bound.
				c.Bed = mttr.BedCost{Window: sp.keepDead + time.Second, Tool: 20 * time.Millisecond, Broker: 30 * time.Millisecond,
					Host: (sp.keepDead + time.Second) / 2, Cores: 2, Late: time.Duration(n+1) * time.Millisecond}
				if sp.fault == "pause" && n == 1 {
					c.Bed.Late = 30 * time.Millisecond
				}
			}
			if err := w.SaveCycle(context.Background(), id, []mttr.Cycle{c}); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.FinishRunAt(context.Background(), id, sp.status, "", started.Add(30*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	r, err := store.OpenReadOnly(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func build(t *testing.T, opts Options) *Report {
	t.Helper()
	rep, err := Build(t.Context(), fixture(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	rep.DB = "results/mttr.db" // the temporary path would differ every run
	return rep
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update to accept):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestGoldenFormats(t *testing.T) {
	backends(t, func(t *testing.T) {
		rep := build(t, Options{Last: 20, Alpha: 0.05})
		for _, format := range []string{"text", "markdown", "csv", "json"} {
			t.Run(format, func(t *testing.T) {
				var b bytes.Buffer
				if err := Write(&b, rep, format); err != nil {
					t.Fatal(err)
				}
				golden(t, "report."+map[string]string{"text": "txt", "markdown": "md", "csv": "csv", "json": "json"}[format], b.Bytes())
			})
		}
		if err := Write(new(bytes.Buffer), rep, "xml"); err == nil {
			t.Error("unknown format accepted")
		}
	})
}

func TestGoldenCompare(t *testing.T) {
	backends(t, func(t *testing.T) {
		c, err := Compare(t.Context(), fixture(t), "sdk-1.0", "2", 0.05)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := WriteComparison(&b, c, "text"); err != nil {
			t.Fatal(err)
		}
		golden(t, "compare.txt", b.Bytes())
		if _, err := Compare(t.Context(), fixture(t), "nope", "2", 0.05); err == nil || !strings.Contains(err.Error(), `run "nope": no such run`) {
			t.Errorf("unknown label: %v", err)
		}
		if _, err := Compare(t.Context(), fixture(t), "1", "99", 0.05); err == nil {
			t.Error("unknown id accepted")
		}
	})
}

var svgElement = regexp.MustCompile(`(?s)<svg.*?</svg>`)

// TestGoldenHTMLStructure checks the page around its charts; the charts'
// own SVG is checked for being there and well-formed, not byte for byte.
func TestGoldenHTMLStructure(t *testing.T) {
	rep := build(t, Options{Last: 20, Alpha: 0.05})
	var b bytes.Buffer
	if err := WriteHTML(&b, rep); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	svgs := svgElement.FindAllString(page, -1)
	if len(svgs) != 2 {
		t.Fatalf("%d charts in the page, want 2", len(svgs))
	}
	for _, s := range svgs {
		if !strings.Contains(s, "<path") && !strings.Contains(s, "<polygon") {
			t.Errorf("chart draws nothing: %.200s", s)
		}
	}
	for _, external := range []string{"http://", "https://", "<link", "src="} {
		for _, line := range strings.Split(svgElement.ReplaceAllString(page, ""), "\n") {
			if strings.Contains(line, external) {
				t.Errorf("page refers to something outside itself: %q", line)
			}
		}
	}
	golden(t, "report.html", []byte(svgElement.ReplaceAllString(page, "<svg>…</svg>")))
}

func TestComparisonChoosesScenarioAndBaseline(t *testing.T) {
	backends(t, func(t *testing.T) {
		rep := build(t, Options{Last: 20, Alpha: 0.05})
		c := rep.Comparison
		if c == nil || c.Old.ID != 1 || c.New.ID != 2 {
			t.Fatalf("comparison %+v, want run 1 vs run 2", c)
		}
		// Medians 512.5 and 802.5 ms; eight values each, completely separated:
		// p = 2/C(16,8) = 0.000155.
		if d := c.Deltas[0]; !d.Worse() || d.Delta != "+56.59%" || math.Abs(d.P-2.0/12870) > 1e-9 {
			t.Errorf("recovery delta %+v, want significantly worse by +56.59%%, p=2/12870", d)
		}
		if len(c.Settings) != 1 || c.Settings[0].Name != "MTTR_MAX_RECONNECT_INTERVAL" {
			t.Errorf("settings that differ %+v", c.Settings)
		}
		rep = build(t, Options{Last: 1, Alpha: 0.05, Baseline: "2"})
		if rep.Comparison != nil || !strings.Contains(rep.Note, "itself") {
			t.Errorf("baseline = newest: comparison %v, note %q", rep.Comparison, rep.Note)
		}
		if len(rep.Runs) != 1 || rep.Runs[0].ID != 3 {
			t.Errorf("MTTR_LAST=1 listed %d runs", len(rep.Runs))
		}
		rep = build(t, Options{Last: 5, Alpha: 0.05, Baseline: "sdk-1.0"})
		if rep.Comparison == nil || rep.Comparison.Old.ID != 1 || !strings.Contains(rep.Comparison.Why, "MTTR_BASELINE=sdk-1.0") {
			t.Errorf("baseline by label: %+v", rep.Comparison)
		}
		if _, err := Build(t.Context(), fixture(t), Options{Last: 5, Alpha: 0.05, Baseline: "missing"}); err == nil || !strings.Contains(err.Error(), "MTTR_BASELINE") {
			t.Errorf("unknown baseline: %v", err)
		}
	})
}

func TestCheck(t *testing.T) {
	backends(t, func(t *testing.T) {
		rep := build(t, Options{Last: 20, Alpha: 0.05})
		v, err := Check(rep, 900)
		if err != nil {
			t.Fatal(err)
		}
		if v.OK() || len(v.Failures) != 1 || !strings.HasPrefix(v.Failures[0], "recovery is significantly worse than run 1 (sdk-1.0)") ||
			!slices.ContainsFunc(v.Passes, func(p string) bool { return strings.HasPrefix(p, "downstream against run 1 (sdk-1.0)") }) {
			t.Errorf("verdict %+v", v)
		}
		v, _ = Check(rep, 700)
		if len(v.Failures) != 2 || !strings.Contains(v.Failures[0], "recovery p95 820 ms exceeds MTTR_MAX_P95=700 ms") {
			t.Errorf("verdict with a tight p95 %+v", v)
		}
		// The same downstream, 300 ms later in the new run, and the same
		// recovery: only downstream fails.
		down := rep.Comparison.Deltas[1]
		if down.Name != "downstream" {
			t.Fatalf("delta 1 is %s", down.Name)
		}
		var slower []float64
		for _, c := range rep.Comparison.New.Cycles {
			d, _ := c.Downstream()
			slower = append(slower, float64(d)/1e6+300)
		}
		var old []float64
		for _, c := range rep.Comparison.Old.Cycles {
			d, _ := c.Downstream()
			old = append(old, float64(d)/1e6)
		}
		rep.Comparison.Deltas = []stats.Delta{stats.CompareSamples("recovery", old, old, 0.05), stats.CompareSamples("downstream", old, slower, 0.05)}
		if v, _ = Check(rep, 0); len(v.Failures) != 1 || !strings.HasPrefix(v.Failures[0], "downstream is significantly worse than run 1 (sdk-1.0)") {
			t.Errorf("verdict with a slower downstream %+v", v)
		}
		rep.Comparison = nil
		rep.Note = "none"
		if v, _ = Check(rep, 0); !v.OK() {
			t.Errorf("run 2 alone should pass: %+v", v)
		}
	})
}

// TestCheckInconclusive guards that a verdict on a run whose test bed
// bound any cycle is inconclusive, whatever its checks say, and that the
// run's warning names the cycles and the limit they passed.
func TestCheckInconclusive(t *testing.T) {
	for _, failed := range []bool{false, true} {
		run := RunSummary{ID: 5, Status: "completed", DeviceCycles: 3, Recovered: 3, BedBound: 1,
			BedWarning: "1 of 3 cycles bed-bound (cycle 2: host 97 % busy (limit 90 %))"}
		if failed {
			run.Recovered, run.NotRecovered = 2, 1
		}
		v, err := Check(&Report{Runs: []RunSummary{run}}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if v.OK() || v.Inconclusive != run.BedWarning || (len(v.Failures) == 1) != failed {
			t.Errorf("failed=%v: verdict %+v", failed, v)
		}
		var b strings.Builder
		WriteVerdict(&b, v)
		if !strings.Contains(b.String(), "INCONCLUSIVE  1 of 3 cycles bed-bound (cycle 2: host 97 % busy") {
			t.Errorf("failed=%v: printed %q", failed, b.String())
		}
	}
	run := RunSummary{ID: 6, Status: "completed", DeviceCycles: 3, Recovered: 3}
	if v, _ := Check(&Report{Runs: []RunSummary{run}}, 0); !v.OK() || v.Inconclusive != "" {
		t.Errorf("a run the bed did not bind: %+v", v)
	}
}

// TestBedWarning guards that a run's summary warns of its bed-bound cycles,
// naming each with its reason, and says nothing for one the bed did not
// bind.
func TestBedWarning(t *testing.T) {
	backends(t, func(t *testing.T) {
		rep := build(t, Options{Last: 20, Alpha: 0.05})
		for _, r := range rep.Runs {
			switch r.ID {
			case 1:
				if r.Bed != "" || r.BedBound != 0 || r.BedWarning != "" {
					t.Errorf("run 1 has no bed measured: %q %d %q", r.Bed, r.BedBound, r.BedWarning)
				}
			case 2:
				if r.BedBound != 0 || r.BedWarning != "" || !strings.HasPrefix(r.Bed, "tool 0.2 % of a core, broker 0.4 %, host 25 % of 2 cores") {
					t.Errorf("run 2: %q %d %q", r.Bed, r.BedBound, r.BedWarning)
				}
			case 3:
				if r.BedBound != 1 || !strings.Contains(r.BedWarning, "cycle 2: timestamps up to 30 ms late (limit 20 ms)") {
					t.Errorf("run 3: %d %q", r.BedBound, r.BedWarning)
				}
			}
		}
	})
}

// TestCheckDeaf fails a run whose devices' messages were acknowledged again
// but whose commands never arrived, and says so.
func TestCheckDeaf(t *testing.T) {
	rep := &Report{Runs: []RunSummary{{ID: 4, Status: "completed", DeviceCycles: 3, Recovered: 0, NotRecovered: 3, Deaf: 3}}}
	v, err := Check(rep, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v.OK() || len(v.Failures) != 1 || !strings.Contains(v.Failures[0], "3 of 3 device-cycles did not recover (3 of them deaf") ||
		!strings.Contains(v.Failures[0], "downstream not recovered") {
		t.Errorf("verdict %+v", v)
	}
}

func TestEmptyDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mttr.db")
	w, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	r, err := store.OpenReadOnly(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := Build(t.Context(), r, Options{Last: 20, Alpha: 0.05}); err == nil || !strings.Contains(err.Error(), "make one with `mage mttr`") {
		t.Errorf("empty database: %v", err)
	}
}

// TestInterruptedCycleCountsInNothing checks that the cycle the interrupt
// cut short is neither "not recovered" nor loss, and is still listed.
func TestInterruptedCycleCountsInNothing(t *testing.T) {
	backends(t, func(t *testing.T) {
		rep := build(t, Options{Last: 20, Alpha: 0.05})
		r := rep.Runs[0] // the interrupted pause run
		if r.Interrupted != 1 || r.NotRecovered != 2 || r.Deaf != 1 || r.Lost != 2 || r.DeviceCycles != 3 || len(r.Cycles) != 4 {
			t.Errorf("interrupted %d not recovered %d deaf %d lost %d device-cycles %d rows %d; want 1 2 1 2 3 4",
				r.Interrupted, r.NotRecovered, r.Deaf, r.Lost, r.DeviceCycles, len(r.Cycles))
		}
	})
}

// TestTrendWarning stores a run whose recovery doubles from cycle to
// cycle, as a backoff that is never reset does, and the same cycles
// shuffled: the report warns of the first alone.
func TestTrendWarning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mttr.db")
	st, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rising := []float64{510, 1020, 2050, 4010, 8030, 10020, 10010, 10040, 10050, 10030}
	shuffled := []float64{10010, 2050, 10040, 510, 10030, 8030, 1020, 10050, 4010, 10020}
	base := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	for i, recs := range [][]float64{rising, shuffled} {
		start := base.Add(time.Duration(i) * time.Hour)
		var cycles [][]mttr.Cycle
		for n, rec := range recs {
			c := cycleAt(start, n+1, "d")
			c.FirstAckAt = c.ReadyAt + int64(rec*1e6)
			cycles = append(cycles, []mttr.Cycle{c})
		}
		storeRun(t, st, start, 1, cycles)
	}
	_, text := buildText(t, st)
	if !strings.Contains(text, "warning: run 1: recovery rises with the cycle") {
		t.Errorf("no trend warning for run 1:\n%s", text)
	}
	if strings.Contains(text, "warning: run 2") {
		t.Errorf("a trend warning for the shuffled run 2:\n%s", text)
	}
}

// TestStorms stores a run of 10 devices whose cycle 1 recovers them after
// 100..900 ms but one, and whose cycle 2 recovers all after 50 ms each:
// the storm table and the page's storm chart show them.
func TestStorms(t *testing.T) {
	st, err := store.Open(t.Context(), filepath.Join(t.TempDir(), "mttr.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	base := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	var cycles [][]mttr.Cycle
	for cycle := 1; cycle <= 2; cycle++ {
		var rows []mttr.Cycle
		for i := range 10 {
			c := cycleAt(base, cycle, fmt.Sprintf("d-%02d", i))
			c.BrokerAcceptPeak = 10 - cycle
			switch {
			case cycle == 2:
				c.FirstAckAt = c.ReadyAt + 50e6
			case i < 9:
				c.FirstAckAt = c.ReadyAt + int64(i+1)*100e6
			}
			rows = append(rows, c)
		}
		cycles = append(cycles, rows)
	}
	storeRun(t, st, base, 10, cycles)
	rep, text := buildText(t, st)
	flat := strings.Join(strings.Fields(text), " ")
	for _, want := range []string{
		"Reconnect storms of run 1 (10 devices)",
		"1 10 500 ms 900 ms - - 9",
		"2 10 50.0 ms 50.0 ms 50.0 ms 50.0 ms 8",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	var page bytes.Buffer
	if err := WriteHTML(&page, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), `<figure id="storm"><svg`) {
		t.Error("the page has no storm chart")
	}
	chart, err := StormChart(rep.Runs[0])
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "storm-chart.svg", []byte(chart))
}

// cycleAt is device's row of cycle n of a run started at start: the fault
// n minutes in, healed and ready a second later, one message sent and
// delivered; the caller sets when it was acknowledged.
func cycleAt(start time.Time, n int, device string) mttr.Cycle {
	fault := start.Add(time.Duration(n) * time.Minute).UnixNano()
	return mttr.Cycle{Cycle: n, Device: device, FaultAt: fault, HealedAt: fault + 1e9, ReadyAt: fault + 1e9, Published: 1, Acknowledged: 1, Delivered: 1}
}

// storeRun stores a completed stop run of devices started at start, one
// row set per cycle.
func storeRun(t *testing.T, st *store.Store, start time.Time, devices int, cycles [][]mttr.Cycle) {
	t.Helper()
	id, err := st.StartRun(t.Context(), store.Run{StartedAt: start, Fault: "stop", KeepAlive: 15 * time.Second, KeepDead: time.Second,
		KeepRunning: time.Second, Devices: devices, CyclesPlanned: len(cycles), ConfigJSON: "{}"})
	if err != nil {
		t.Fatal(err)
	}
	for _, rows := range cycles {
		if err := st.SaveCycle(t.Context(), id, rows); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.FinishRun(t.Context(), id, store.StatusCompleted, ""); err != nil {
		t.Fatal(err)
	}
}

// buildText is st's report and its text output.
func buildText(t *testing.T, st *store.Store) (*Report, string) {
	t.Helper()
	rep, err := Build(t.Context(), st, Options{Last: 10, Alpha: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := Write(&text, rep, "text"); err != nil {
		t.Fatal(err)
	}
	return rep, text.String()
}
