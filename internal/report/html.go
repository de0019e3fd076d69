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
	page := struct {
		*Report
		Tables   []section
		Recovery template.HTML
		Timeline template.HTML
		Newest   string
		Legend   []LegendEntry
	}{Report: rep, Tables: reportTables(rep), Legend: TimelineLegend()}
	rc, err := RecoveryChart(rep.Runs)
	if err != nil {
		return err
	}
	page.Recovery = template.HTML(rc)
	if len(rep.Runs) > 0 {
		tc, err := TimelineChart(rep.Runs[0], TimelineRows)
		if err != nil {
			return err
		}
		page.Timeline = template.HTML(tc)
		page.Newest = rep.Runs[0].Name()
	}
	if err := pageTemplate.Execute(w, page); err != nil {
		return fmt.Errorf("html: %w", err)
	}
	return nil
}

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MTTR lab report</title>
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
<h1>MTTR lab report</h1>
<p class="note">Database {{.DB}}. Medians with 95 % confidence intervals; ~ means no significant difference at alpha {{.Alpha}} (Mann-Whitney U test).</p>
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
{{if .Recovery}}<figure id="recovery">{{.Recovery}}<figcaption>Recovery per run: box plot of every device-cycle whose messages were acknowledged again.</figcaption></figure>
{{else}}<p class="note">No run has a recovery yet.</p>{{end}}
{{if .Timeline}}<figure id="timeline">{{.Timeline}}<ul class="legend">{{range .Legend}}<li><span style="background: {{.Color}}"></span>{{.Name}}</li>{{end}}</ul><figcaption>Timeline of {{.Newest}}: for each cycle and device, from the fault to the first acknowledged message; under it, thin, the downstream: from ready to the first command received.</figcaption></figure>{{end}}
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
