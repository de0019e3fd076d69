package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/mttrlab/mttr/internal/report"
	"github.com/mttrlab/mttr/internal/store"
)

// openResults opens MTTR_DB read-only; a report never changes it.
func (l *Lab) openResults(ctx context.Context) (*store.Store, error) {
	st, err := store.OpenReadOnly(ctx, l.Config.DB)
	if errors.Is(err, fs.ErrNotExist) && !store.IsPostgres(l.Config.DB) {
		return nil, fmt.Errorf("no results database at %s (MTTR_DB): make a run with `mage mttr`", l.Config.DB)
	}
	return st, fromDB(err)
}

// fromDB names MTTR_DB in an error of the store's, which names the
// database but not the setting that chose it.
func fromDB(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("MTTR_DB: %w", err)
}

// build reads the report from MTTR_DB.
func (l *Lab) build(ctx context.Context) (*report.Report, error) {
	st, err := l.openResults(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return report.Build(ctx, st, report.Options{Last: l.Config.Last, Baseline: l.Config.Baseline, Alpha: l.Config.Alpha})
}

// Report prints the newest runs and the comparison of the newest completed
// run with its baseline in MTTR_FORMAT, and writes the HTML page to
// MTTR_HTML (its path goes to the error stream, so that CSV and JSON output
// stay clean).
//
// With MTTR_STUDY it reports that study instead (studyReport).
func (l *Lab) Report(ctx context.Context) error {
	if l.Config.Study != "" {
		return l.studyReport(ctx)
	}
	rep, err := l.build(ctx)
	if err != nil {
		return err
	}
	if err := report.Write(l.Out, rep, l.Config.Format); err != nil {
		return err
	}
	if err := writeFileAtomic(l.Config.HTML, func(f *os.File) error { return report.WriteHTML(f, rep) }); err != nil {
		return fmt.Errorf("MTTR_HTML: %w", err)
	}
	fmt.Fprintf(l.errOut(), "HTML report: %s\n", l.Config.HTML)
	return nil
}

// studyReport prints study MTTR_STUDY's table in MTTR_FORMAT, writes its
// chart of recovery against keep-dead as an SVG file beside MTTR_HTML
// (the text and markdown point to it), and its page to MTTR_HTML.
func (l *Lab) studyReport(ctx context.Context) error {
	st, err := l.openResults(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	rep, err := report.BuildStudy(ctx, st, l.Config.Study, l.Config.Alpha)
	if err != nil {
		return err
	}
	chart, err := report.StudyChart(rep)
	if err != nil {
		return err
	}
	if chart != "" {
		rep.Chart = filepath.Join(filepath.Dir(l.Config.HTML), "study-"+fileSafe(rep.Label)+".svg")
		if err := writeFileAtomic(rep.Chart, func(f *os.File) error {
			_, err := io.WriteString(f, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+chart+"\n")
			return err
		}); err != nil {
			return err
		}
	}
	if err := report.WriteStudy(l.Out, rep, l.Config.Format); err != nil {
		return err
	}
	if err := writeFileAtomic(l.Config.HTML, func(f *os.File) error { return report.WriteStudyHTML(f, rep) }); err != nil {
		return fmt.Errorf("MTTR_HTML: %w", err)
	}
	fmt.Fprintf(l.errOut(), "HTML report: %s\n", l.Config.HTML)
	return nil
}

// fileSafe keeps letters, digits, dots, dashes and underscores of s, for
// a file name.
func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) {
			return r
		}
		return '_'
	}, s)
}

// Compare prints runs a and b (ids or labels) side by side; when both
// name studies (their labels), the two studies, combination by
// combination.
func (l *Lab) Compare(ctx context.Context, a, b string) error {
	st, err := l.openResults(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	_, errA := st.FindStudy(ctx, a)
	_, errB := st.FindStudy(ctx, b)
	if errA == nil && errB == nil {
		c, err := report.CompareStudies(ctx, st, a, b, l.Config.Alpha)
		if err != nil {
			return err
		}
		return report.WriteStudyComparison(l.Out, c, l.Config.Format)
	}
	c, err := report.Compare(ctx, st, a, b, l.Config.Alpha)
	if err != nil {
		return err
	}
	return report.WriteComparison(l.Out, c, l.Config.Format)
}

// Check fails when the newest completed run regressed: recovery p95 above
// MTTR_MAX_P95, a device that did not recover, or recovery significantly
// worse than its baseline.
func (l *Lab) Check(ctx context.Context) error {
	rep, err := l.build(ctx)
	if err != nil {
		return err
	}
	v, err := report.Check(rep, float64(l.Config.MaxP95.Microseconds())/1000)
	if err != nil {
		return err
	}
	l.printf("checking %s\n", v.Run.Name())
	report.WriteVerdict(l.Out, v)
	switch {
	case v.Inconclusive != "":
		return InconclusiveError{fmt.Sprintf("check: %s is inconclusive: its test bed bound %d of its cycles (%d of %d checks failed)",
			v.Run.Name(), v.Run.BedBound, len(v.Failures), len(v.Failures)+len(v.Passes))}
	case !v.OK():
		return fmt.Errorf("check: %s failed %d of %d checks", v.Run.Name(), len(v.Failures), len(v.Failures)+len(v.Passes))
	}
	return nil
}

// ExitInconclusive is check's exit status for a verdict that cannot be
// trusted (a bed-bound run): neither 0 (passed) nor 1 (failed).
const ExitInconclusive = 3

// InconclusiveError is check's error for a bed-bound run; mage exits with
// its ExitStatus.
type InconclusiveError struct{ msg string }

func (e InconclusiveError) Error() string   { return e.msg }
func (e InconclusiveError) ExitStatus() int { return ExitInconclusive }

func (l *Lab) errOut() io.Writer {
	if l.Err != nil {
		return l.Err
	}
	return l.Out
}

// writeFileAtomic writes path through a temporary file in its directory.
func writeFileAtomic(path string, write func(*os.File) error) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("%s is a directory; name a file", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
