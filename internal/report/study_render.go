package report

import (
	"fmt"
	"html/template"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// WriteStudy renders a study in format: "text", "markdown", "csv" (one row
// per combination) or "json".
func WriteStudy(w io.Writer, s *StudyReport, format string) error {
	return formats{
		tables: func() []section { return studyTables(s) },
		csv: func(w io.Writer) error { // the table, each row led by the study's label
			sec := studyTables(s)[0]
			rows := make([][]string, len(sec.Rows))
			for i, r := range sec.Rows {
				rows[i] = append([]string{s.Label}, r...)
			}
			return writeTableCSV(w, append([]string{"study"}, sec.Head...), rows)
		},
		json: s,
	}.write(w, format)
}

func studyTables(s *StudyReport) []section {
	sec := section{
		Title: fmt.Sprintf("Study %s: %d of %d runs completed (order drawn from seed %d, started %s UTC)",
			s.Label, s.Completed, s.Planned, s.Seed, s.StartedAt.Format("2006-01-02 15:04")),
		Head:  []string{"fault", "keep-dead", "devices", "run", "status", "recovery median", "p95", "not recovered", "downstream median"},
		Chart: s.Chart,
	}
	for _, c := range s.Cells {
		run, status := "-", "not run yet"
		if c.RunID != 0 {
			run, status = strconv.FormatInt(c.RunID, 10), c.Status
		}
		sec.Rows = append(sec.Rows, []string{c.Fault, fmtDur(c.KeepDeadMS), strconv.Itoa(c.Devices), run, status,
			withCI(c.Recovery), fmtMS(c.Recovery.P95, c.Recovery.N), fmt.Sprintf("%d/%d", c.NotRecovered, c.DeviceCycles), withCI(c.Downstream)})
		if c.TrendWarning != "" {
			sec.Notes = append(sec.Notes, fmt.Sprintf("warning: run %d (%s): %s", c.RunID, c.Key(), c.TrendWarning))
		}
	}
	sec.Notes = append(sec.Notes, "recovery: from the broker being ready to the device's first PUBACK; medians with 95% confidence intervals; not recovered: device-cycles in which a direction did not come back")
	return []section{sec}
}

// WriteStudyComparison renders two studies compared in format.
func WriteStudyComparison(w io.Writer, c *StudyComparison, format string) error {
	return formats{
		tables: func() []section { return studyComparisonTables(c) },
		csv: func(w io.Writer) error {
			sec := studyComparisonTables(c)[0]
			return writeTableCSV(w, sec.Head, sec.Rows)
		},
		json: c,
	}.write(w, format)
}

func studyComparisonTables(c *StudyComparison) []section {
	sec := section{
		Title: fmt.Sprintf("Study %s vs study %s, combination by combination", c.Old.Label, c.New.Label),
		Head:  []string{"combination", "metric", c.Old.Label, c.New.Label, "delta", "p"},
	}
	for _, cell := range c.Cells {
		for _, d := range []struct {
			name  string
			delta CellDelta
		}{{"recovery", cell}, {"downstream", cell}} {
			dl := d.delta.Recovery
			if d.name == "downstream" {
				dl = d.delta.Downstream
				if dl.N1 == 0 && dl.N2 == 0 { // neither listens for commands
					continue
				}
			}
			p := "-"
			if !math.IsNaN(dl.P) {
				p = fmt.Sprintf("p=%.3f n=%s", dl.P, sizes(dl.N1, dl.N2))
			}
			sec.Rows = append(sec.Rows, []string{cell.Cell, d.name, withCI(dl.Old), withCI(dl.New), dl.Delta, p})
			for _, w := range dl.Warnings {
				sec.Notes = append(sec.Notes, fmt.Sprintf("%s, %s: %s", cell.Cell, d.name, w))
			}
		}
	}
	for _, sr := range []*StudyReport{c.Old, c.New} {
		for _, cell := range sr.Cells {
			if cell.RunID != 0 && cell.Status != "completed" {
				sec.Notes = append(sec.Notes, fmt.Sprintf("%s, %s: run %d is %s; its completed cycles are compared", sr.Label, cell.Key(), cell.RunID, cell.Status))
			}
		}
	}
	sec.Notes = append(sec.Notes, c.Unmatched...)
	sec.Notes = append(sec.Notes, fmt.Sprintf("~ means no significant difference at alpha %g (Mann-Whitney U test, each combination on its own: with many combinations, expect about alpha of them to differ by chance)", c.Alpha))
	return []section{sec}
}

// StudyChart draws each combination's median recovery against its
// keep-dead, one line per fault (and fleet size), with its 95 %
// confidence interval as a band where it is finite. "" when no
// combination has a recovery yet.
func StudyChart(s *StudyReport) (string, error) {
	p := plot.New()
	p.Title.Text = "Recovery against outage length (median, 95% CI)"
	p.X.Label.Text = "keep-dead (s)"
	p.Y.Label.Text = "recovery (ms)"
	p.Legend.Top = true
	fleets := s.fleets()
	var names []string
	series := map[string][]StudyCell{}
	for _, c := range s.Cells {
		if c.Recovery.N == 0 {
			continue
		}
		k := c.Series(fleets)
		if _, ok := series[k]; !ok {
			names = append(names, k)
		}
		series[k] = append(series[k], c)
	}
	if len(names) == 0 {
		return "", nil
	}
	for i, name := range names {
		cells := series[name]
		slices.SortFunc(cells, func(a, b StudyCell) int { return int(a.KeepDeadMS - b.KeepDeadMS) })
		clr := plotColor(i)
		var line plotter.XYs
		var lo, hi plotter.XYs
		for _, c := range cells {
			x := float64(c.KeepDeadMS) / 1000
			line = append(line, plotter.XY{X: x, Y: c.Recovery.Median})
			if c.Recovery.HasCI() {
				lo = append(lo, plotter.XY{X: x, Y: c.Recovery.Lo})
				hi = append(hi, plotter.XY{X: x, Y: c.Recovery.Hi})
			}
		}
		if len(lo) >= 2 {
			band := append(slices.Clone(lo), reversed(hi)...)
			poly, err := plotter.NewPolygon(band)
			if err != nil {
				return "", fmt.Errorf("chart: %w", err)
			}
			fill := clr
			fill.A = 0x40
			poly.Color, poly.LineStyle.Width = fill, 0
			p.Add(poly)
		}
		l, pts, err := plotter.NewLinePoints(line)
		if err != nil {
			return "", fmt.Errorf("chart: %w", err)
		}
		l.Color, pts.Color, pts.Shape = clr, clr, draw.CircleGlyph{}
		p.Add(l, pts)
		p.Legend.Add(name, l, pts)
	}
	p.Add(plotter.NewGrid())
	return svg(p, vg.Points(520), vg.Points(320))
}

func reversed(xy plotter.XYs) plotter.XYs {
	out := slices.Clone(xy)
	slices.Reverse(out)
	return out
}

// plotColor is the i-th of a set of distinct line colours.
func plotColor(i int) color.RGBA {
	palette := []color.RGBA{
		{0x1f, 0x77, 0xb4, 0xff}, {0xd6, 0x27, 0x28, 0xff}, {0x2c, 0xa0, 0x2c, 0xff}, {0xff, 0x7f, 0x0e, 0xff},
		{0x94, 0x67, 0xbd, 0xff}, {0x8c, 0x56, 0x4b, 0xff}, {0xe3, 0x77, 0xc2, 0xff}, {0x7f, 0x7f, 0x7f, 0xff},
	}
	return palette[i%len(palette)]
}

// WriteStudyHTML renders a study as one self-contained page: its table
// and its chart.
func WriteStudyHTML(w io.Writer, s *StudyReport) error {
	pg := page{
		Title:  "MTTR lab study " + s.Label,
		Intro:  fmt.Sprintf("Database %s. Medians with 95 %% confidence intervals.", s.DB),
		Tables: studyTables(s),
		Empty:  "No combination has a recovery yet.",
	}
	pg.Tables[0].Chart = "" // drawn below
	chart, err := StudyChart(s)
	if err != nil {
		return err
	}
	if chart != "" {
		pg.Figures = append(pg.Figures, figure{ID: "study", SVG: template.HTML(chart),
			Caption: "Recovery against keep-dead: each combination's median, with its 95% confidence interval as a band; one line per fault. The curve's shape is the client's reconnect policy."})
	}
	return pg.write(w)
}
