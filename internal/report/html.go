package report

import (
	"fmt"
	"html/template"
	"io"
)

// TimelineRows caps the timeline chart; the CSV and JSON carry every row.
const TimelineRows = 40

// WriteHTML renders rep as one self-contained page: the run table, the
// comparison, a box plot of recovery per run and the timeline of the newest
// run. It loads nothing from the network; its only script checks that the
// charts rendered, for tests that open it in a browser.
func WriteHTML(w io.Writer, rep *Report) error {
	pg := page{
		Title:  "MTTR lab report",
		Intro:  fmt.Sprintf("Database %s. Medians with 95 %% confidence intervals; ~ means no significant difference at alpha %g (Mann-Whitney U test).", rep.DB, rep.Alpha),
		Tables: reportTables(rep),
		Empty:  "No run has a recovery yet.",
	}
	rc, err := RecoveryChart(rep.Runs)
	if err != nil {
		return err
	}
	if rc != "" {
		pg.Figures = append(pg.Figures, figure{ID: "recovery", SVG: template.HTML(rc),
			Caption: "Recovery per run: box plot of every device-cycle whose messages were acknowledged again."})
	}
	if r := newestFleet(rep.Runs); r != nil {
		sc, err := StormChart(*r)
		if err != nil {
			return err
		}
		if sc != "" {
			pg.Figures = append(pg.Figures, figure{ID: "storm", SVG: template.HTML(sc),
				Caption: fmt.Sprintf("Reconnect storms of %s: in each cycle, the fraction of its devices recovered against the time since the broker was ready.", r.Name())})
		}
	}
	if len(rep.Runs) > 0 {
		tc, err := TimelineChart(rep.Runs[0], TimelineRows)
		if err != nil {
			return err
		}
		if tc != "" {
			pg.Figures = append(pg.Figures, figure{ID: "timeline", SVG: template.HTML(tc), Legend: TimelineLegend(),
				Caption: fmt.Sprintf("Timeline of %s: for each cycle and device, from the fault to the first acknowledged message; under it, thin, the downstream: from ready to the first command received.", rep.Runs[0].Name())})
		}
	}
	return pg.write(w)
}

// page is one self-contained HTML page: tables, then charts.
type page struct {
	Title, Intro string
	Tables       []section
	Figures      []figure
	Empty        string // said when there is no figure
}

type figure struct {
	ID      string
	SVG     template.HTML
	Legend  []LegendEntry
	Caption string
}

func (pg page) write(w io.Writer) error {
	if err := pageTemplate.Execute(w, pg); err != nil {
		return fmt.Errorf("html: %w", err)
	}
	return nil
}

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
.note { color: #555; font-size: 0.9rem; }
figure { margin: 1rem 0; }
.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 1rem; font-size: 0.9rem; }
.legend span { display: inline-block; width: 1rem; height: 0.8rem; margin-right: 0.3rem; vertical-align: middle; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p class="note">{{.Intro}}</p>
{{range .Tables}}
<section>
<h2>{{.Title}}</h2>
{{if .Head}}<table>
<thead><tr>{{range .Head}}<th>{{.}}</th>{{end}}</tr></thead>
<tbody>{{range .Rows}}
<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>{{end}}
</tbody>
</table>{{end}}
{{range .Notes}}<p class="note">{{.}}</p>
{{end}}</section>
{{end}}
<h2>Charts</h2>
{{range .Figures}}<figure id="{{.ID}}">{{.SVG}}{{if .Legend}}<ul class="legend">{{range .Legend}}<li><span style="background: {{.Color}}"></span>{{.Name}}</li>{{end}}</ul>{{end}}<figcaption>{{.Caption}}</figcaption></figure>
{{else}}<p class="note">{{.Empty}}</p>{{end}}
<script>
window.addEventListener('error', function (e) { document.body.setAttribute('data-errors', String(e.message)); });
window.addEventListener('load', function () {
  var svgs = document.querySelectorAll('figure svg');
  var ok = svgs.length > 0;
  svgs.forEach(function (s) { var b = s.getBBox(); if (!(b.width > 0 && b.height > 0)) { ok = false; } });
  document.body.setAttribute('data-charts', ok ? 'rendered:' + svgs.length : 'failed');
});
</script>
</body>
</html>
`))
