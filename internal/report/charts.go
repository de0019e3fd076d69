package report

import (
	"bytes"
	"fmt"
	"image/color"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/mttrlab/mttr/internal/mttr"
)

// svg renders p as an SVG element (without the XML prolog).
func svg(p *plot.Plot, w, h vg.Length) (string, error) {
	wt, err := p.WriterTo(w, h, "svg")
	if err != nil {
		return "", fmt.Errorf("chart: %w", err)
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return "", fmt.Errorf("chart: %w", err)
	}
	s := b.String()
	if i := strings.Index(s, "<svg"); i >= 0 {
		s = s[i:]
	}
	return s, nil
}

// RecoveryChart draws a box plot of recovery per run, oldest on the left.
// It returns "" when no run has a recovery value.
func RecoveryChart(runs []RunSummary) (string, error) {
	p := plot.New()
	p.Title.Text = "Recovery per run (first PUBACK − broker ready)"
	p.Y.Label.Text = "ms"
	var names []string
	for _, r := range slices.Backward(runs) {
		var vals plotter.Values
		for _, c := range r.Cycles {
			if d, ok := c.Recovery(); ok {
				vals = append(vals, millis(d))
			}
		}
		if len(vals) == 0 {
			continue
		}
		box, err := plotter.NewBoxPlot(vg.Points(18), float64(len(names)), vals)
		if err != nil {
			return "", fmt.Errorf("chart: %w", err)
		}
		box.FillColor = color.RGBA{R: 0x9e, G: 0xc5, B: 0xe8, A: 0xff}
		p.Add(box)
		names = append(names, fmt.Sprintf("run %d", r.ID))
	}
	if len(names) == 0 {
		return "", nil
	}
	p.NominalX(names...)
	p.Add(plotter.NewGrid())
	return svg(p, vg.Points(float64(max(360, 60*len(names)))), vg.Points(300))
}

// Timeline phases, in order, with their colours.
var phases = []struct {
	name string
	clr  color.RGBA
}{
	{"fault → lost (detection)", color.RGBA{0xf5, 0xa6, 0x23, 0xff}},
	{"broker down", color.RGBA{0xd0, 0x02, 0x1b, 0xff}},
	{"healed → broker back (start-up)", color.RGBA{0xf8, 0xe7, 0x1c, 0xff}},
	{"broker back → ready (path)", color.RGBA{0x9b, 0x59, 0xb6, 0xff}},
	{"ready → reconnected", color.RGBA{0x7e, 0xd3, 0x21, 0xff}},
	{"→ first PUBACK (recovery)", color.RGBA{0x4a, 0x90, 0xe2, 0xff}},
	{"ready → resubscribed (thin bar: downstream)", color.RGBA{0xa0, 0xa0, 0xa0, 0xff}},
	{"→ first command received (downstream)", color.RGBA{0x1a, 0xbc, 0x9c, 0xff}},
}

// Phases drawn on the thin bar under a row: the downstream.
const (
	phaseResubscribed = 6
	phaseFirstCommand = 7
)

// span is one coloured bar segment: row y, from x0 to x1 ms after the fault;
// downstream phases are drawn as a thin bar under the row.
type span struct {
	y, x0, x1 float64
	phase     int
}

// timeline draws spans as horizontal bars.
type timeline struct{ spans []span }

func (t timeline) Plot(c draw.Canvas, p *plot.Plot) {
	tx, ty := p.Transforms(&c)
	for _, s := range t.spans {
		x0, x1, y := tx(s.x0), tx(s.x1), ty(s.y)
		lo, hi := y-vg.Points(5), y+vg.Points(5)
		if s.phase >= phaseResubscribed {
			lo, hi = y-vg.Points(8), y-vg.Points(5.5)
		}
		if x1 <= x0 {
			x1 = x0 + vg.Points(1)
		}
		c.FillPolygon(phases[s.phase].clr, c.ClipPolygonXY([]vg.Point{{X: x0, Y: lo}, {X: x1, Y: lo}, {X: x1, Y: hi}, {X: x0, Y: hi}}))
	}
}

func (t timeline) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, ymin, ymax = 0, -0.5, 0.5
	for _, s := range t.spans {
		xmin, xmax = min(xmin, s.x0), max(xmax, s.x1)
		ymax = max(ymax, s.y+0.5)
	}
	return xmin, xmax, ymin, ymax
}

// LegendEntry names a timeline colour.
type LegendEntry struct{ Name, Color string }

// TimelineLegend lists the timeline's phases with their CSS colours; the
// page draws the legend beside the chart, where it covers no bar.
func TimelineLegend() []LegendEntry {
	var out []LegendEntry
	for _, ph := range phases {
		out = append(out, LegendEntry{ph.name, fmt.Sprintf("#%02x%02x%02x", ph.clr.R, ph.clr.G, ph.clr.B)})
	}
	return out
}

// TimelineChart draws the per-cycle timeline of run: one bar per cycle and
// device (at most maxRows), in ms after the fault took effect. It returns
// "" when the run has no cycles.
func TimelineChart(run RunSummary, maxRows int) (string, error) {
	var t timeline
	var names []string
	rows := run.Cycles
	if len(rows) > maxRows {
		rows = rows[:maxRows]
	}
	for _, c := range slices.Backward(rows) {
		y := float64(len(names))
		names = append(names, fmt.Sprintf("c%d %s", c.Cycle, c.Device))
		if c.FaultAt == 0 {
			continue
		}
		at := func(ns int64) float64 { return float64(ns-c.FaultAt) / 1e6 }
		add := func(from, to int64, phase int) {
			if from != 0 && to != 0 && to >= from { // a thawed broker can be back before the heal call returned
				t.spans = append(t.spans, span{y, at(from), at(to), phase})
			}
		}
		downFrom := c.FaultAt
		if c.LostAt != 0 {
			add(c.FaultAt, c.LostAt, 0)
			downFrom = max(c.LostAt, c.FaultAt)
		}
		add(downFrom, c.HealedAt, 1)
		if back := c.BackAt(); back != 0 {
			add(c.HealedAt, back, 2)
			add(back, c.ReadyAt, 3)
		} else {
			add(c.HealedAt, c.ReadyAt, 2)
		}
		if c.ReconnectedAt != 0 {
			add(c.ReadyAt, c.ReconnectedAt, 4)
			add(c.ReconnectedAt, c.FirstAckAt, 5)
		} else {
			add(c.ReadyAt, c.FirstAckAt, 5)
		}
		if c.ResubscribedAt != 0 {
			add(c.ReadyAt, c.ResubscribedAt, phaseResubscribed)
			add(c.ResubscribedAt, c.FirstC2DAt, phaseFirstCommand)
		} else {
			add(c.ReadyAt, c.FirstC2DAt, phaseFirstCommand)
		}
	}
	if len(names) == 0 {
		return "", nil
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Timeline of %s, ms after the fault", run.Name())
	p.X.Label.Text = "ms"
	p.Add(plotter.NewGrid(), t)
	p.NominalY(names...)
	return svg(p, vg.Points(720), vg.Points(float64(120+18*len(names))))
}

// StormChart draws, for each cycle of a fleet's run, the fraction of its
// devices recovered against the time since the broker was ready, as a
// step curve. "" when no cycle has a recovered device.
func StormChart(r RunSummary) (string, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Reconnect storms of %s (%d devices)", r.Name(), r.Devices)
	p.X.Label.Text = "time since the broker was ready (s)"
	p.Y.Label.Text = "fraction of devices recovered"
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top, p.Legend.Left = false, false
	drawn := 0
	for i, st := range mttr.Storms(r.Cycles) {
		curve := st.Curve()
		if len(curve) == 0 {
			continue
		}
		xy := plotter.XYs{{X: 0, Y: 0}}
		for _, pt := range curve {
			x := pt.After.Seconds()
			xy = append(xy, plotter.XY{X: x, Y: xy[len(xy)-1].Y}, plotter.XY{X: x, Y: pt.Fraction})
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return "", fmt.Errorf("chart: %w", err)
		}
		l.Color = plotColor(i)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("cycle %d", st[0].Cycle), l)
		drawn++
	}
	if drawn == 0 {
		return "", nil
	}
	p.Add(plotter.NewGrid())
	return svg(p, vg.Points(520), vg.Points(320))
}
