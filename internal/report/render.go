package report

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/perf/benchmath"

	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/stats"
)

// Write renders rep in format: "text", "markdown", "csv" or "json".
func Write(w io.Writer, rep *Report, format string) error {
	return formats{
		tables: func() []section { return reportTables(rep) },
		csv:    func(w io.Writer) error { return writeCSV(w, rep.Runs) },
		json:   rep,
	}.write(w, format)
}

// WriteComparison renders a comparison of two runs in format.
func WriteComparison(w io.Writer, c *Comparison, format string) error {
	return formats{
		tables: func() []section { return comparisonTables(c) },
		csv:    func(w io.Writer) error { return writeCSV(w, []RunSummary{c.Old, c.New}) },
		json:   c,
	}.write(w, format)
}

// formats is what one kind of report gives each output format: its
// tables (text and markdown), its CSV, and the value JSON encodes.
type formats struct {
	tables func() []section
	csv    func(io.Writer) error
	json   any
}

func (f formats) write(w io.Writer, format string) error {
	switch format {
	case "text":
		return writeTables(w, f.tables(), false)
	case "markdown":
		return writeTables(w, f.tables(), true)
	case "csv":
		return f.csv(w)
	case "json":
		return writeJSON(w, f.json)
	}
	return fmt.Errorf("format %q: want text, markdown, csv or json", format)
}

// writeTableCSV writes a table as CSV: its head, then its rows.
func writeTableCSV(w io.Writer, head []string, rows [][]string) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(head); err != nil {
		return err
	}
	if err := cw.WriteAll(rows); err != nil {
		return err
	}
	return cw.Error()
}

// section is a heading, a table, lines of notes, and the path of a chart
// file text and markdown point to.
type section struct {
	Title string
	Head  []string
	Rows  [][]string
	Notes []string
	Chart string
}

func reportTables(rep *Report) []section {
	runs := section{
		Title: fmt.Sprintf("Runs in %s, newest first", rep.DB),
		Head: []string{"run", "started (UTC)", "label", "status", "fault", "keep-dead", "devices", "test bed", "recovered",
			"recovery median", "p95", "max", "downstream median", "p95", "detection median", "path median", "path max", "lost", "commands lost"},
	}
	for _, r := range rep.Runs {
		runs.Rows = append(runs.Rows, []string{
			strconv.FormatInt(r.ID, 10), r.StartedAt.Format("2006-01-02 15:04"), r.Label, r.Status, r.Fault,
			fmtDur(r.KeepDeadMS), strconv.Itoa(r.Devices), r.TestBed(),
			fmt.Sprintf("%d/%d", r.Recovered, r.CyclesPlanned*r.Devices),
			withCI(r.Recovery), fmtMS(r.Recovery.P95, r.Recovery.N), fmtMS(r.Recovery.Max, r.Recovery.N),
			withCI(r.Downstream), fmtMS(r.Downstream.P95, r.Downstream.N),
			fmtMS(r.Detection.Median, r.Detection.N), fmtMS(r.Path.Median, r.Path.N), fmtMS(r.Path.Max, r.Path.N),
			strconv.Itoa(r.Lost), strconv.Itoa(r.C2DLost),
		})
	}
	for _, r := range rep.Runs {
		runs.Notes = append(runs.Notes, r.warnings()...)
	}
	if len(rep.Runs) > 0 && rep.Runs[0].Bed != "" {
		runs.Notes = append(runs.Notes, fmt.Sprintf("test bed of run %d, from each fault to its cycle's end: %s", rep.Runs[0].ID, rep.Runs[0].Bed))
	}
	runs.Notes = append(runs.Notes, "recovered: device-cycles in which both directions came back (messages acknowledged, commands received); downstream: from the broker being back to the first command received")
	runs.Notes = append(runs.Notes, "path: from the broker being back (its listening line, or the first client event after it resumed) to the first answer through the devices' network path; the test bed's delay, not the client's")
	out := []section{runs}
	if r := newestFleet(rep.Runs); r != nil {
		out = append(out, stormTable(r))
	}
	if rep.Comparison != nil {
		out = append(out, comparisonTables(rep.Comparison)...)
	} else if rep.Note != "" {
		out = append(out, section{Title: "Comparison", Notes: []string{rep.Note}})
	}
	return out
}

// newestFleet is the newest of runs with more than one device, or nil.
func newestFleet(runs []RunSummary) *RunSummary {
	for i := range runs {
		if len(runs[i].Storms) > 0 {
			return &runs[i]
		}
	}
	return nil
}

// stormTable shows each cycle of a fleet's run: when half, 90 %, 99 % and
// all of its devices had recovered, and the broker's accept rate.
func stormTable(r *RunSummary) section {
	sec := section{
		Title: fmt.Sprintf("Reconnect storms of %s (%d devices)", r.Name(), r.Devices),
		Head:  []string{"cycle", "devices", "50% recovered", "90%", "99%", "100%", "broker peak accepts/s"},
	}
	ms := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return fmtMS(*v, 1)
	}
	for _, s := range r.Storms {
		sec.Rows = append(sec.Rows, []string{strconv.Itoa(s.Cycle), strconv.Itoa(s.Devices), ms(s.P50), ms(s.P90), ms(s.P99), ms(s.P100), strconv.Itoa(s.AcceptPeak)})
	}
	sec.Notes = append(sec.Notes, "times after the broker was ready until that fraction of the cycle's devices had recovered (- when fewer did); accepts/s: the most connections the broker accepted in any one second from the heal on, from its own log")
	return sec
}

func comparisonTables(c *Comparison) []section {
	cmp := section{
		Title: fmt.Sprintf("%s vs %s: %s (%s)", c.Old.Name(), c.New.Name(), c.Why, scenarios(c)),
		Head:  []string{"", "run " + strconv.FormatInt(c.Old.ID, 10), "run " + strconv.FormatInt(c.New.ID, 10), "delta", "p"},
	}
	for _, d := range c.Deltas {
		p := "-"
		if !math.IsNaN(d.P) {
			p = fmt.Sprintf("p=%.3f n=%s", d.P, sizes(d.N1, d.N2))
		}
		cmp.Rows = append(cmp.Rows, []string{d.Name, withCI(d.Old), withCI(d.New), d.Delta, p})
		for _, w := range d.Old.Warnings {
			cmp.Notes = append(cmp.Notes, fmt.Sprintf("%s, run %d: %s", d.Name, c.Old.ID, w))
		}
		for _, w := range d.New.Warnings {
			cmp.Notes = append(cmp.Notes, fmt.Sprintf("%s, run %d: %s", d.Name, c.New.ID, w))
		}
		for _, w := range d.Warnings {
			cmp.Notes = append(cmp.Notes, fmt.Sprintf("%s: %s", d.Name, w))
		}
	}
	for _, r := range []RunSummary{c.Old, c.New} {
		cmp.Notes = append(cmp.Notes, r.warnings()...)
	}
	cmp.Notes = append(cmp.Notes, fmt.Sprintf("~ means no significant difference at alpha %g (Mann-Whitney U test); medians with 95%% confidence intervals", c.Alpha))
	out := []section{cmp}
	if len(c.Settings) > 0 {
		s := section{Title: "Settings that differ", Head: []string{"setting", "run " + strconv.FormatInt(c.Old.ID, 10), "run " + strconv.FormatInt(c.New.ID, 10)}}
		for _, d := range c.Settings {
			s.Rows = append(s.Rows, []string{d.Name, d.Old, d.New})
		}
		out = append(out, s)
	}
	return out
}

func scenarios(c *Comparison) string {
	if o, n := c.Old.Scenario(), c.New.Scenario(); o != n {
		return o + " vs " + n
	}
	return c.New.Scenario()
}

func sizes(n1, n2 int) string {
	if n1 == n2 {
		return strconv.Itoa(n1)
	}
	return fmt.Sprintf("%d+%d", n1, n2)
}

// withCI formats a median with its confidence interval as benchstat does:
// "812 ms ± 3%", or "± ∞" when there are too few values for one.
func withCI(m stats.Metric) string {
	if m.N == 0 {
		return "-"
	}
	pct := benchmath.Summary{Center: m.Median, Lo: m.Lo, Hi: m.Hi}.PctRangeString()
	return fmtMS(m.Median, m.N) + " ± " + pct
}

func fmtMS(v float64, n int) string {
	if n == 0 || math.IsNaN(v) {
		return "-"
	}
	if math.Abs(v) < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + " ms"
}

func fmtDur(ms int64) string { return (time.Duration(ms) * time.Millisecond).String() }

func writeTables(w io.Writer, sections []section, markdown bool) error {
	var b strings.Builder
	for i, s := range sections {
		if i > 0 {
			b.WriteString("\n")
		}
		if markdown {
			fmt.Fprintf(&b, "## %s\n\n", s.Title)
		} else {
			fmt.Fprintf(&b, "%s\n\n", s.Title)
		}
		if len(s.Head) > 0 {
			if markdown {
				writeMarkdownTable(&b, s.Head, s.Rows)
			} else {
				tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, strings.Join(s.Head, "\t"))
				for _, r := range s.Rows {
					fmt.Fprintln(tw, strings.Join(r, "\t"))
				}
				tw.Flush()
			}
		}
		if s.Chart != "" {
			if markdown {
				fmt.Fprintf(&b, "\n![%s](%s)\n", s.Title, s.Chart)
			} else {
				fmt.Fprintf(&b, "\nchart: %s\n", s.Chart)
			}
		}
		if len(s.Notes) > 0 {
			if len(s.Head) > 0 || s.Chart != "" {
				b.WriteString("\n")
			}
			for _, n := range s.Notes {
				if markdown {
					fmt.Fprintf(&b, "- %s\n", n)
				} else {
					fmt.Fprintf(&b, "note: %s\n", n)
				}
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeMarkdownTable(b *strings.Builder, head []string, rows [][]string) {
	esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	line := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + esc(c) + " |")
		}
		b.WriteString("\n")
	}
	line(head)
	b.WriteString("|" + strings.Repeat("---|", len(head)) + "\n")
	for _, r := range rows {
		line(r)
	}
}

var csvHead = []string{"run_id", "label", "fault", "cycle", "device", "fault_at", "lost_at", "healed_at", "listening_at",
	"resumed_at", "held_until_at", "ready_at", "reconnected_at", "attempt_at", "broker_address", "broker_accept_peak", "first_ack_at", "last_ack_before_at", "recovery_ms", "detection_ms",
	"outage_ms", "path_ms", "interrupted", "reconnect_attempts", "puback_median_ms", "published", "acknowledged", "delivered", "lost",
	"duplicated", "listens", "resubscribed_at", "commands_back_at", "first_c2d_at", "session", "downstream_ms", "c2d_sent", "c2d_received", "c2d_lost",
	"c2d_duplicated", "bed_window_ms", "bed_tool_cpu_ms", "bed_broker_cpu_ms", "bed_clients_cpu_ms", "bed_host_cpu_ms", "bed_cores",
	"bed_late_ms", "bed_bound", "error"}

// writeCSV writes one row per cycle and device of runs; empty cells are NULL.
func writeCSV(w io.Writer, runs []RunSummary) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHead); err != nil {
		return err
	}
	for _, r := range runs {
		for _, c := range r.Cycles {
			rec := []string{strconv.FormatInt(r.ID, 10), r.Label, r.Fault, strconv.Itoa(c.Cycle), c.Device,
				ts(c.FaultAt), ts(c.LostAt), ts(c.HealedAt), ts(c.ListeningAt), ts(c.ResumedAt), ts(c.HeldUntilAt), ts(c.ReadyAt),
				ts(c.ReconnectedAt), ts(c.AttemptAt), c.BrokerAddress, count(c.BrokerAcceptPeak), ts(c.FirstAckAt), ts(c.LastAckBeforeAt),
				msCell(c.Recovery()), msCell(c.Detection()), msCell(c.Outage()), msCell(c.Path()),
				strconv.FormatBool(c.Interrupted), strconv.Itoa(c.ReconnectAttempts), msCell(c.PubackMedian, c.PubackMedian > 0), strconv.Itoa(c.Published), strconv.Itoa(c.Acknowledged),
				strconv.Itoa(c.Delivered), strconv.Itoa(c.Lost), strconv.Itoa(c.Duplicated),
				strconv.FormatBool(c.Listens), ts(c.ResubscribedAt), ts(c.CommandsBackAt), ts(c.FirstC2DAt), c.Session, msCell(c.Downstream()),
				strconv.Itoa(c.C2DSent), strconv.Itoa(c.C2DReceived), strconv.Itoa(c.C2DLost), strconv.Itoa(c.C2DDuplicated)}
			rec = append(rec, bedCells(c.Bed)...)
			rec = append(rec, c.Error)
			if err := cw.Write(rec); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// warnings are r's warnings as notes: its recovery trend, and the cycles
// its test bed bound.
func (r RunSummary) warnings() []string {
	var out []string
	for _, w := range []string{r.TrendWarning, r.BedWarning} {
		if w != "" {
			out = append(out, fmt.Sprintf("warning: run %d: %s", r.ID, w))
		}
	}
	return out
}

// bedCells are the bed_* columns: empty when the window was not measured,
// and the broker's CPU empty when it was not. bed_bound lists why the cycle
// was bed-bound under mttr.DefaultBedLimits.
func bedCells(b mttr.BedCost) []string {
	if !b.Measured() {
		return make([]string, 8)
	}
	return []string{msCell(b.Window, true), msCell(b.Tool, true), msCell(b.Broker, b.Broker >= 0), msCell(b.Clients, true),
		msCell(b.Host, true), strconv.Itoa(b.Cores), msCell(b.Late, true), strings.Join(b.Bound(mttr.DefaultBedLimits), "; ")}
}

// count is n, or "" (NULL) for 0.
func count(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

func ts(ns int64) string {
	if ns == 0 {
		return ""
	}
	return strconv.FormatInt(ns, 10)
}

// msCell writes a derived duration in milliseconds, empty when it does not
// exist.
func msCell(d time.Duration, ok bool) string {
	if !ok {
		return ""
	}
	return strconv.FormatFloat(millis(d), 'f', -1, 64)
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Cycles are a run's stored cycle rows; in JSON each row's missing times
// are null and it carries the durations its methods derive.
type Cycles []mttr.Cycle

// MarshalJSON writes the rows with snake_case names, as in the database.
func (cs Cycles) MarshalJSON() ([]byte, error) {
	rows := make([]json.RawMessage, len(cs))
	for i, c := range cs {
		b, err := cycleJSON(c)
		if err != nil {
			return nil, err
		}
		rows[i] = b
	}
	return json.Marshal(rows)
}

func cycleJSON(c mttr.Cycle) ([]byte, error) {
	t := func(ns int64) *int64 {
		if ns == 0 {
			return nil
		}
		return &ns
	}
	d := func(v time.Duration, ok bool) *float64 {
		if !ok {
			return nil
		}
		ms := millis(v)
		return &ms
	}
	n := func(v int) *int {
		if v == 0 {
			return nil
		}
		return &v
	}
	m := c.Bed.Measured()
	return json.Marshal(struct {
		Cycle             int      `json:"cycle"`
		Device            string   `json:"device"`
		FaultAt           *int64   `json:"fault_at"`
		LostAt            *int64   `json:"lost_at"`
		HealedAt          *int64   `json:"healed_at"`
		ListeningAt       *int64   `json:"listening_at"`
		ResumedAt         *int64   `json:"resumed_at"`
		HeldUntilAt       *int64   `json:"held_until_at"`
		ReadyAt           *int64   `json:"ready_at"`
		ReconnectedAt     *int64   `json:"reconnected_at"`
		AttemptAt         *int64   `json:"attempt_at"`
		BrokerAddress     string   `json:"broker_address,omitempty"`
		BrokerAcceptPeak  *int     `json:"broker_accept_peak"`
		FirstAckAt        *int64   `json:"first_ack_at"`
		LastAckBeforeAt   *int64   `json:"last_ack_before_at"`
		RecoveryMS        *float64 `json:"recovery_ms"`
		DetectionMS       *float64 `json:"detection_ms"`
		OutageMS          *float64 `json:"outage_ms"`
		PathMS            *float64 `json:"path_ms"`
		Interrupted       bool     `json:"interrupted"`
		ReconnectAttempts int      `json:"reconnect_attempts"`
		PubackMedianMS    *float64 `json:"puback_median_ms"`
		Published         int      `json:"published"`
		Acknowledged      int      `json:"acknowledged"`
		Delivered         int      `json:"delivered"`
		Lost              int      `json:"lost"`
		Duplicated        int      `json:"duplicated"`
		Listens           bool     `json:"listens"`
		ResubscribedAt    *int64   `json:"resubscribed_at"`
		CommandsBackAt    *int64   `json:"commands_back_at"`
		FirstC2DAt        *int64   `json:"first_c2d_at"`
		Session           string   `json:"session,omitempty"`
		DownstreamMS      *float64 `json:"downstream_ms"`
		C2DSent           int      `json:"c2d_sent"`
		C2DReceived       int      `json:"c2d_received"`
		C2DLost           int      `json:"c2d_lost"`
		C2DDuplicated     int      `json:"c2d_duplicated"`
		BedWindowMS       *float64 `json:"bed_window_ms"`
		BedToolMS         *float64 `json:"bed_tool_cpu_ms"`
		BedBrokerMS       *float64 `json:"bed_broker_cpu_ms"`
		BedClientsMS      *float64 `json:"bed_clients_cpu_ms"`
		BedHostMS         *float64 `json:"bed_host_cpu_ms"`
		BedCores          *int     `json:"bed_cores"`
		BedLateMS         *float64 `json:"bed_late_ms"`
		BedBound          []string `json:"bed_bound,omitempty"`
		Error             string   `json:"error,omitempty"`
	}{c.Cycle, c.Device, t(c.FaultAt), t(c.LostAt), t(c.HealedAt), t(c.ListeningAt), t(c.ResumedAt), t(c.HeldUntilAt), t(c.ReadyAt),
		t(c.ReconnectedAt), t(c.AttemptAt), c.BrokerAddress, n(c.BrokerAcceptPeak), t(c.FirstAckAt), t(c.LastAckBeforeAt),
		d(c.Recovery()), d(c.Detection()), d(c.Outage()), d(c.Path()), c.Interrupted,
		c.ReconnectAttempts, d(c.PubackMedian, c.PubackMedian > 0), c.Published, c.Acknowledged, c.Delivered, c.Lost, c.Duplicated,
		c.Listens, t(c.ResubscribedAt), t(c.CommandsBackAt), t(c.FirstC2DAt), c.Session, d(c.Downstream()), c.C2DSent, c.C2DReceived, c.C2DLost, c.C2DDuplicated,
		d(c.Bed.Window, m), d(c.Bed.Tool, m), d(c.Bed.Broker, m && c.Bed.Broker >= 0), d(c.Bed.Clients, m), d(c.Bed.Host, m), n(c.Bed.Cores),
		d(c.Bed.Late, m), c.Bed.Bound(mttr.DefaultBedLimits), c.Error})
}
