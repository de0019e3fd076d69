// Package report answers "did this change make recovery better or worse,
// and is the difference real?" with benchstat's statistics: medians with
// 95 % confidence intervals and the Mann-Whitney U test, from
// golang.org/x/perf/benchmath. It computes a Report from the results store
// and renders it as text, markdown, CSV, JSON and an HTML page with charts.
// Statistics never print; caveats travel with the numbers as warnings.
package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/mttrlab/mttr/internal/device"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/stats"
	"github.com/mttrlab/mttr/internal/store"
)

// Options select what a report covers.
type Options struct {
	Last     int     // how many runs to list, newest first
	Baseline string  // run id or label to compare the newest completed run with; empty: the previous run of its scenario
	Alpha    float64 // significance level
}

// Report is everything the renderers show.
type Report struct {
	DB         string       `json:"db"`
	Alpha      float64      `json:"alpha"`
	Runs       []RunSummary `json:"runs"`
	Comparison *Comparison  `json:"comparison,omitempty"`
	Note       string       `json:"note,omitempty"` // why there is no comparison
}

// RunSummary is one run with its statistics and cycles.
type RunSummary struct {
	ID            int64             `json:"id"`
	StartedAt     time.Time         `json:"started_at"`
	FinishedAt    *time.Time        `json:"finished_at,omitempty"`
	Status        string            `json:"status"`
	Error         string            `json:"error,omitempty"`
	Label         string            `json:"label"`
	Fault         string            `json:"fault"`
	KeepAliveMS   int64             `json:"keep_alive_ms"`
	KeepDeadMS    int64             `json:"keep_dead_ms"`
	KeepRunningMS int64             `json:"keep_running_ms"`
	Devices       int               `json:"devices"`
	CyclesPlanned int               `json:"cycles_planned"`
	Host          string            `json:"host"`
	ToolVersion   string            `json:"tool_version"`
	EngineVersion string            `json:"engine_version"`
	ImageID       string            `json:"image_id"`
	Broker        string            `json:"broker"`
	NetNS         string            `json:"netns,omitempty"`
	Network       string            `json:"network,omitempty"`    // what the network path did (store.Run.Network)
	DeviceTLS     string            `json:"device_tls,omitempty"` // our devices' TLS policy where not the default (store.Run.DeviceTLS)
	Settings      map[string]string `json:"settings"`

	CyclesDone   int `json:"cycles_done"`
	DeviceCycles int `json:"device_cycles"`
	Recovered    int `json:"recovered"`
	NotRecovered int `json:"not_recovered"`
	Published    int `json:"published"`
	Acknowledged int `json:"acknowledged"`
	Delivered    int `json:"delivered"`
	Lost         int `json:"lost"`
	Duplicated   int `json:"duplicated"`
	Interrupted  int `json:"interrupted"` // device-cycles cut short by an interrupt, counted in nothing above
	Deaf         int `json:"deaf"`        // not recovered: upstream back, downstream not
	C2DSent      int `json:"c2d_sent"`
	C2DReceived  int `json:"c2d_received"`
	C2DLost      int `json:"c2d_lost"`

	Recovery   stats.Metric `json:"recovery_ms"`
	Downstream stats.Metric `json:"downstream_ms"`
	Detection  stats.Metric `json:"detection_ms"`
	Outage     stats.Metric `json:"outage_ms"`
	Path       stats.Metric `json:"path_ms"`
	// Trend tests each cycle's median recovery (not recovered: infinite)
	// against the cycle's index; TrendWarning says when it is significant.
	Trend        stats.Trend `json:"recovery_trend"`
	TrendWarning string      `json:"recovery_trend_warning,omitempty"`

	// Bed is the test bed's own cost over every cycle's window (one line,
	// empty when not measured); BedBound counts the cycles it bound under
	// mttr.DefaultBedLimits, and BedWarning says so.
	Bed        string `json:"test_bed,omitempty"`
	BedBound   int    `json:"bed_bound_cycles"`
	BedWarning string `json:"bed_warning,omitempty"`

	// Storms are, for a fleet (more than one device), each cycle's
	// reconnect storm.
	Storms []StormSummary `json:"storms,omitempty"`

	Cycles Cycles `json:"cycles"`
}

// Scenario is what makes two runs comparable.
func (r RunSummary) Scenario() string {
	s := fmt.Sprintf("fault %s, keep-dead %s, %d device(s), %s", r.Fault, time.Duration(r.KeepDeadMS)*time.Millisecond, r.Devices, r.TestBed())
	for _, n := range []string{r.Network, r.DeviceTLS} {
		if n != "" {
			s += ", " + n
		}
	}
	return s
}

// TestBed names where the broker ran.
func (r RunSummary) TestBed() string {
	return store.Run{Broker: r.Broker, NetNS: r.NetNS}.TestBed()
}

// Name is "run 7" or "run 7 (label)".
func (r RunSummary) Name() string {
	if r.Label != "" {
		return fmt.Sprintf("run %d (%s)", r.ID, r.Label)
	}
	return fmt.Sprintf("run %d", r.ID)
}

// Build reads the newest opts.Last runs from st and compares the newest
// completed run with its baseline. A database without runs is an error
// that says how to make one.
func Build(ctx context.Context, st *store.Store, opts Options) (*Report, error) {
	runs, err := st.Runs(ctx, opts.Last)
	if err != nil {
		return nil, err
	}
	if len(runs) == 0 {
		return nil, fmt.Errorf("no runs in %s yet: make one with `mage mttr`", st.Path())
	}
	rep := &Report{DB: st.Path(), Alpha: opts.Alpha}
	read := runReader{st: st, alpha: opts.Alpha, done: map[int64]loaded{}}
	for _, r := range runs {
		l, err := read.run(ctx, r)
		if err != nil {
			return nil, err
		}
		rep.Runs = append(rep.Runs, l.summary)
	}
	newest, err := st.LatestCompleted(ctx)
	if errors.Is(err, store.ErrNoRun) {
		rep.Note = "no completed run to compare"
		return rep, nil
	} else if err != nil {
		return nil, err
	}
	var base store.Run
	why := ""
	if opts.Baseline != "" {
		base, err = st.FindRun(ctx, opts.Baseline)
		why = fmt.Sprintf("baseline MTTR_BASELINE=%s", opts.Baseline)
		if err != nil {
			return nil, fmt.Errorf("MTTR_BASELINE: %w", err)
		}
	} else {
		base, err = st.PreviousOfScenario(ctx, newest)
		why = "the previous completed run of the same scenario"
		if errors.Is(err, store.ErrNoRun) {
			rep.Note = fmt.Sprintf("run %d has no earlier completed run with %s to compare with; set MTTR_BASELINE to choose one", newest.ID, summaryOf(newest).Scenario())
			return rep, nil
		} else if err != nil {
			return nil, err
		}
	}
	if base.ID == newest.ID {
		rep.Note = fmt.Sprintf("the baseline is the newest completed run (%d) itself", newest.ID)
		return rep, nil
	}
	c, err := read.compare(ctx, base, newest, opts.Alpha)
	if err != nil {
		return nil, err
	}
	c.Why = why
	rep.Comparison = c
	return rep, nil
}

// Compare compares runs a (old) and b (new), each a run id or label.
func Compare(ctx context.Context, st *store.Store, a, b string, alpha float64) (*Comparison, error) {
	old, err := st.FindRun(ctx, a)
	if err != nil {
		return nil, err
	}
	cur, err := st.FindRun(ctx, b)
	if err != nil {
		return nil, err
	}
	read := runReader{st: st, alpha: alpha, done: map[int64]loaded{}}
	c, err := read.compare(ctx, old, cur, alpha)
	if err != nil {
		return nil, err
	}
	c.Why = "as asked"
	return c, nil
}

func summaryOf(r store.Run) RunSummary {
	s := RunSummary{
		ID: r.ID, StartedAt: r.StartedAt.UTC(), Status: r.Status, Error: r.Error, Label: r.Label, Fault: r.Fault,
		KeepAliveMS: r.KeepAlive.Milliseconds(), KeepDeadMS: r.KeepDead.Milliseconds(), KeepRunningMS: r.KeepRunning.Milliseconds(),
		Devices: r.Devices, CyclesPlanned: r.CyclesPlanned, Host: r.Host, ToolVersion: r.ToolVersion,
		EngineVersion: r.EngineVersion, ImageID: r.ImageID, Broker: r.Broker, NetNS: r.NetNS, Network: r.Network(), DeviceTLS: r.DeviceTLS(),
		Settings: map[string]string{},
	}
	if !r.FinishedAt.IsZero() {
		f := r.FinishedAt.UTC()
		s.FinishedAt = &f
	}
	_ = json.Unmarshal([]byte(r.ConfigJSON), &s.Settings)
	if cs, ok := s.Settings["MTTR_CONNECTION_STRING"]; ok { // runs stored before keys were redacted
		s.Settings["MTTR_CONNECTION_STRING"] = device.RedactConnectionString(cs)
	}
	return s
}

// samples are a run's per-device-cycle durations in milliseconds, as the
// Cycle methods define them.
type samples struct {
	recovery, downstream, detection, outage, path []float64
}

func (sm *samples) add(c mttr.Cycle) {
	put := func(dst *[]float64, d time.Duration, ok bool) {
		if ok {
			*dst = append(*dst, float64(d)/float64(time.Millisecond))
		}
	}
	d, ok := c.Recovery()
	put(&sm.recovery, d, ok)
	d, ok = c.Downstream()
	put(&sm.downstream, d, ok)
	d, ok = c.Detection()
	put(&sm.detection, d, ok)
	d, ok = c.Outage()
	put(&sm.outage, d, ok)
	d, ok = c.Path()
	put(&sm.path, d, ok)
}

// loaded is a run read from the store: its summary and its samples.
type loaded struct {
	summary RunSummary
	samples samples
}

// runReader reads each run from the store once, however often a report
// needs it (in the run table and in the comparison).
type runReader struct {
	st    *store.Store
	alpha float64 // the level of the trend test
	done  map[int64]loaded
}

func (rr runReader) run(ctx context.Context, r store.Run) (loaded, error) {
	if l, ok := rr.done[r.ID]; ok {
		return l, nil
	}
	l, err := summarize(ctx, rr.st, r, rr.alpha)
	if err != nil {
		return loaded{}, err
	}
	rr.done[r.ID] = l
	return l, nil
}

func summarize(ctx context.Context, st *store.Store, r store.Run, alpha float64) (loaded, error) {
	s := summaryOf(r)
	cycles, err := st.Cycles(ctx, r.ID)
	if err != nil {
		return loaded{}, err
	}
	var sm samples
	seen := map[int]bool{}
	s.Cycles = cycles
	for _, c := range cycles {
		seen[c.Cycle] = true
		if !c.Counts() {
			s.Interrupted++
			continue
		}
		s.DeviceCycles++
		if c.Recovered() {
			s.Recovered++
		} else {
			s.NotRecovered++
		}
		if c.Deaf() {
			s.Deaf++
		}
		s.C2DSent += c.C2DSent
		s.C2DReceived += c.C2DReceived
		s.C2DLost += c.C2DLost
		s.Published += c.Published
		s.Acknowledged += c.Acknowledged
		s.Delivered += c.Delivered
		s.Lost += c.Lost
		s.Duplicated += c.Duplicated
		sm.add(c)
	}
	s.CyclesDone = len(seen)
	s.Recovery, s.Downstream, s.Detection = stats.Summarize(sm.recovery), stats.Summarize(sm.downstream), stats.Summarize(sm.detection)
	s.Outage, s.Path = stats.Summarize(sm.outage), stats.Summarize(sm.path)
	var series []float64 // each cycle's median recovery, in cycle order; +Inf when that is a device that did not recover
	var bed mttr.BedCost
	var why []string
	for _, st := range mttr.Storms(cycles) {
		if b := st[0].Bed; b.Measured() {
			bed = bed.Add(b)
			if w := b.Bound(mttr.DefaultBedLimits); len(w) > 0 {
				s.BedBound++
				why = append(why, fmt.Sprintf("cycle %d: %s", st[0].Cycle, strings.Join(w, ", ")))
			}
		}
		if st.Devices() == 0 {
			continue // cut short by the interrupt
		}
		med := math.Inf(1)
		if d, ok := st.Median(); ok {
			med = millis(d)
		}
		series = append(series, med)
		if s.Devices > 1 {
			s.Storms = append(s.Storms, stormOf(st))
		}
	}
	if bed.Measured() {
		s.Bed = bed.String()
	}
	if s.BedBound > 0 {
		s.BedWarning = fmt.Sprintf("%d of %d cycles bed-bound (%s): the machine, not the client, may have set their figures",
			s.BedBound, s.CyclesDone, strings.Join(why, "; "))
	}
	s.Trend = stats.TrendOf(series)
	s.TrendWarning = s.Trend.Warning(alpha)
	return loaded{s, sm}, nil
}

// StormSummary is one cycle of a fleet: when fractions of its devices had
// recovered, in ms after the broker was ready (null when fewer did), and
// the broker's peak accepted-connection rate.
type StormSummary struct {
	Cycle      int      `json:"cycle"`
	Devices    int      `json:"devices"`
	P50        *float64 `json:"recovered_50_ms"`
	P90        *float64 `json:"recovered_90_ms"`
	P99        *float64 `json:"recovered_99_ms"`
	P100       *float64 `json:"recovered_100_ms"`
	AcceptPeak int      `json:"broker_accept_peak_per_s"`
}

// stormFractions are the fractions of a fleet a storm reports.
var stormFractions = []float64{0.5, 0.9, 0.99, 1}

func stormOf(st mttr.Storm) StormSummary {
	out := StormSummary{Cycle: st[0].Cycle, Devices: st.Devices(), AcceptPeak: st.AcceptPeak()}
	for i, dst := range []**float64{&out.P50, &out.P90, &out.P99, &out.P100} {
		if d, ok := st.RecoveredBy(stormFractions[i]); ok {
			ms := millis(d)
			*dst = &ms
		}
	}
	return out
}

// Comparison is an old run against a new one.
type Comparison struct {
	Old      RunSummary    `json:"old"`
	New      RunSummary    `json:"new"`
	Why      string        `json:"why"` // how the old run was chosen
	Alpha    float64       `json:"alpha"`
	Deltas   []stats.Delta `json:"deltas"`
	Settings []SettingDiff `json:"settings_that_differ"`
}

// SettingDiff is a setting whose value differs between two runs.
type SettingDiff struct {
	Name string `json:"name"`
	Old  string `json:"old"`
	New  string `json:"new"`
}

// ignoredSettings differ between runs without changing what is measured.
var ignoredSettings = map[string]bool{"MTTR_LABEL": true, "MTTR_STUDY": true, "MTTR_STUDY_SEED": true, "MTTR_STORE_GRACE": true, "MTTR_DB": true, "MTTR_BASELINE": true, "MTTR_FORMAT": true,
	"MTTR_LAST": true, "MTTR_ALPHA": true, "MTTR_MAX_P95": true, "MTTR_HTML": true, "MTTR_CONTAINER": true, "MTTR_CERT_DIR": true}

func (rr runReader) compare(ctx context.Context, oldRun, newRun store.Run, alpha float64) (*Comparison, error) {
	o, err := rr.run(ctx, oldRun)
	if err != nil {
		return nil, err
	}
	n, err := rr.run(ctx, newRun)
	if err != nil {
		return nil, err
	}
	old, cur, oldS, newS := o.summary, n.summary, o.samples, n.samples
	c := &Comparison{Old: old, New: cur, Alpha: alpha, Deltas: []stats.Delta{
		stats.CompareSamples("recovery", oldS.recovery, newS.recovery, alpha),
		stats.CompareSamples("downstream", oldS.downstream, newS.downstream, alpha),
		stats.CompareSamples("detection", oldS.detection, newS.detection, alpha),
		stats.CompareSamples("outage", oldS.outage, newS.outage, alpha),
		stats.CompareSamples("path", oldS.path, newS.path, alpha),
	}}
	names := slices.Sorted(maps.Keys(old.Settings))
	for _, k := range slices.Sorted(maps.Keys(cur.Settings)) {
		if _, ok := old.Settings[k]; !ok {
			names = append(names, k)
		}
	}
	for _, k := range names {
		if !ignoredSettings[k] && old.Settings[k] != cur.Settings[k] {
			c.Settings = append(c.Settings, SettingDiff{Name: k, Old: old.Settings[k], New: cur.Settings[k]})
		}
	}
	return c, nil
}
