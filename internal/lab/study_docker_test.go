package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/store"
)

// TestDockerStudy runs a 2 × 2 study (stop, kill × two keep-deads),
// interrupts it once its first run has completed, resumes it, and checks
// that the runs are grouped, that the resumed study ran only the
// combinations it lacked, and that every output has its table and chart.
func TestDockerStudy(t *testing.T) {
	t.Parallel()
	dockertest.Engine(t)
	lab, _ := sharedLab(t)
	base := shortRun(t, lab, "stop")
	base.Config.RestartCount = 1
	for _, fault := range []string{"stop", "kill"} {
		for _, kd := range []time.Duration{time.Second, 2 * time.Second} {
			c := base.Config
			c.Fault, c.KeepDead = fault, kd
			base.Config.Cells = append(base.Config.Cells, c)
		}
	}
	base.Config.Study, base.Config.StudySeed = "s2x2", 7

	// Interrupted as soon as its first run has completed.
	out := &lineWatch{}
	firstDone := out.on("completed: 1 cycles")
	first := *base
	first.Out = out
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		select {
		case <-firstDone:
		case <-ctx.Done():
		}
		cancel()
	}()
	_, err := first.Mttr(ctx)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "study s2x2 interrupted") || !strings.Contains(err.Error(), "resume with MTTR_STUDY=s2x2") {
		t.Fatalf("interrupted study: %v\n%s", err, out.String())
	}
	completed := studyRuns(t, base.Config.DB, "s2x2")
	if n := countCompleted(completed); n != 1 {
		t.Fatalf("%d runs completed before the interrupt, want 1", n)
	}

	// Resumed: only the three combinations it lacked.
	second := *base
	var log strings.Builder
	second.Out = &log
	if _, err := second.Mttr(testCtx(t)); err != nil {
		t.Fatalf("resumed study: %v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "resuming with the 3 of 4 runs not completed yet") {
		t.Errorf("the resumed study did not say what it resumed:\n%s", log.String())
	}
	runs := studyRuns(t, base.Config.DB, "s2x2")
	perPosition := map[int]int{}
	for _, r := range runs {
		if r.Status == store.StatusCompleted {
			perPosition[r.StudyPosition]++
		}
	}
	if len(perPosition) != 4 {
		t.Errorf("completed positions %v, want 1 to 4", perPosition)
	}
	for pos, n := range perPosition {
		if n != 1 {
			t.Errorf("position %d completed %d times: the resumed study ran it again", pos, n)
		}
	}

	// The study's report in every format, and its page.
	rep := *base
	rep.Config.Cells = nil
	rep.Config.HTML = filepath.Join(t.TempDir(), "report.html")
	chart := filepath.Join(filepath.Dir(rep.Config.HTML), "study-s2x2.svg")
	for format, want := range map[string][]string{
		"text":     {"Study s2x2: 4 of 4 runs completed", "chart: " + chart},
		"markdown": {"## Study s2x2: 4 of 4 runs completed", "](" + chart + ")"},
		"json":     {`"study": "s2x2"`, `"chart": "` + chart + `"`, `"runs_completed": 4`},
	} {
		var b bytes.Buffer
		rep.Out, rep.Err = &b, &bytes.Buffer{}
		rep.Config.Format = format
		if err := rep.Report(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s report lacks %q:\n%s", format, w, b.String())
			}
		}
		if format == "json" {
			var v struct{ Cells []struct{ Fault string } }
			if err := json.Unmarshal(b.Bytes(), &v); err != nil || len(v.Cells) != 4 {
				t.Errorf("json: %d cells, %v", len(v.Cells), err)
			}
		}
	}
	for _, f := range []string{chart, rep.Config.HTML} {
		b, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(b), "<svg") || !strings.Contains(string(b), "kill") {
			t.Errorf("%s: no chart of the study (%v)", f, err)
		}
	}
}

func studyRuns(t *testing.T, db, label string) []store.Run {
	t.Helper()
	st := readStore(t, db)
	s, err := st.FindStudy(t.Context(), label)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := st.StudyRuns(t.Context(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	return runs
}

func countCompleted(runs []store.Run) int {
	n := 0
	for _, r := range runs {
		if r.Status == store.StatusCompleted {
			n++
		}
	}
	return n
}
