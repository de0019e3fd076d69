package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/mttrlab/mttr/internal/config"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/store"
)

// studyRef places a run in a study.
type studyRef struct {
	id       int64
	position int
}

func cellOf(c config.Config) store.StudyCell {
	return store.StudyCell{Fault: c.Fault, KeepDead: c.KeepDead.String(), Devices: c.Devices}
}

// sharedSettings are the settings of c that a study's runs share: all but
// the study's axes and those that do not change what is measured.
func sharedSettings(c config.Config) map[string]string {
	vars := c.Vars()
	if c.BrokerAddrPublished() { // derived from MTTR_PORT, which may differ
		delete(vars, "MTTR_BROKER_ADDR")
	}
	for _, k := range append(slices.Clone(config.StudyAxes), "MTTR_STUDY", "MTTR_STUDY_SEED", "MTTR_LABEL", "MTTR_DB", "MTTR_STORE_GRACE",
		"MTTR_LAST", "MTTR_BASELINE", "MTTR_FORMAT", "MTTR_HTML", "MTTR_ALPHA", "MTTR_MAX_P95", "MTTR_CONTAINER", "MTTR_PORT") {
		delete(vars, k)
	}
	return vars
}

// planStudy orders cfg's combinations with seed.
func planStudy(cfg config.Config, seed uint64) store.StudyPlan {
	p := store.StudyPlan{Settings: sharedSettings(cfg)}
	for _, c := range cfg.Cells {
		p.Cells = append(p.Cells, cellOf(c))
	}
	rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)).Shuffle(len(p.Cells), func(i, j int) {
		p.Cells[i], p.Cells[j] = p.Cells[j], p.Cells[i]
	})
	return p
}

// planDiffers says how the stored plan p differs from the one cfg asks
// for, or "" when they are the same (in any order).
func planDiffers(p store.StudyPlan, cfg config.Config) string {
	var want []store.StudyCell
	for _, c := range cfg.Cells {
		want = append(want, cellOf(c))
	}
	key := func(c store.StudyCell) string { return c.String() }
	have, asked := map[string]bool{}, map[string]bool{}
	for _, c := range p.Cells {
		have[key(c)] = true
	}
	for _, c := range want {
		asked[key(c)] = true
	}
	var diffs []string
	if !maps.Equal(have, asked) {
		diffs = append(diffs, fmt.Sprintf("its combinations (%d stored, %d asked for)", len(have), len(asked)))
	}
	now := sharedSettings(cfg)
	for _, k := range slices.Sorted(maps.Keys(now)) {
		if now[k] != p.Settings[k] {
			diffs = append(diffs, fmt.Sprintf("%s (%q stored, %q now)", k, p.Settings[k], now[k]))
		}
	}
	return strings.Join(diffs, ", ")
}

// runStudy runs a study: one run of every combination in Cells, in the
// study's order, skipping those the study has completed already. A new
// label starts a study; a known one resumes it, when its plan matches.
// Ctrl-C stops it after the current run is stored as interrupted; every
// finished run stays. It returns the id of the last run it made.
func (l *Lab) runStudy(ctx context.Context) (int64, error) {
	cfg := l.Config
	label := cfg.Study
	if label == "" {
		label = "study-" + time.Now().Format("20060102-150405")
	}
	db, err := store.Open(ctx, cfg.DB)
	if err != nil {
		return 0, fromDB(err)
	}
	defer db.Close()
	st, err := db.FindStudy(ctx, label)
	var plan store.StudyPlan
	switch {
	case errors.Is(err, store.ErrNoStudy):
		seed := cfg.StudySeed
		for seed == 0 {
			seed = rand.Uint64()
		}
		plan = planStudy(cfg, seed)
		js, _ := json.Marshal(plan)
		st = store.Study{Label: label, Seed: seed, PlanJSON: string(js), StartedAt: time.Now()}
		if st.ID, err = db.CreateStudy(ctx, st); err != nil {
			return 0, err
		}
		l.printf("study %s: %d runs in an order drawn from seed %d\n", label, len(plan.Cells), seed)
	case err != nil:
		return 0, err
	default:
		if plan, err = st.Plan(); err != nil {
			return 0, err
		}
		if cfg.StudySeed != 0 && cfg.StudySeed != st.Seed {
			return 0, fmt.Errorf("MTTR_STUDY_SEED=%d: study %s was ordered with seed %d; leave MTTR_STUDY_SEED unset to resume it, or give a new MTTR_STUDY", cfg.StudySeed, label, st.Seed)
		}
		if d := planDiffers(plan, cfg); d != "" {
			return 0, fmt.Errorf("MTTR_STUDY=%s: the study in %s was planned with other settings: %s; resume it with its own settings, or give a new MTTR_STUDY", label, store.Shown(cfg.DB), d)
		}
	}
	runs, err := db.StudyRuns(ctx, st.ID)
	if err != nil {
		return 0, err
	}
	db.Close()
	done := map[int]bool{}
	for _, r := range runs {
		if r.Status == store.StatusCompleted {
			done[r.StudyPosition] = true
		}
	}
	byCell := map[store.StudyCell]config.Config{}
	for _, c := range cfg.Cells {
		byCell[cellOf(c)] = c
	}
	todo := len(plan.Cells) - len(done)
	if len(done) > 0 {
		l.printf("study %s: resuming with the %d of %d runs not completed yet\n", label, todo, len(plan.Cells))
	}
	l.printf("study %s: stop it with Ctrl-C and resume it with MTTR_STUDY=%s and the same settings\n", label, label)
	var last int64
	var failed []string
	var spent, planned time.Duration // of the runs made so far: for the ETA
	n := 0
	for i, cell := range plan.Cells {
		pos := i + 1
		if done[pos] {
			continue
		}
		n++
		run := l.copyFor(byCell[cell], studyRef{id: st.ID, position: pos}, label)
		l.printf("study %s: run %d of %d (position %d of %d: %s); ETA %s\n", label, n, todo, pos, len(plan.Cells), cell,
			studyETA(plan, done, i, spent, planned, byCell).Round(time.Second))
		began := time.Now()
		id, err := run.Mttr(ctx)
		if id != 0 {
			last = id
		}
		spent += time.Since(began)
		planned += plannedTime(byCell[cell])
		if ctx.Err() != nil {
			if err == nil { // the run had ended before the interrupt
				err = mttr.ErrInterrupted
			}
			return last, fmt.Errorf("study %s interrupted at run %d of %d; its finished runs are stored in %s: resume with MTTR_STUDY=%s go tool mage mttr: %w",
				label, n, todo, store.Shown(cfg.DB), label, err)
		}
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", cell, err))
			l.printf("study %s: %v; going on with the next\n", label, err)
		}
	}
	if len(failed) > 0 {
		return last, fmt.Errorf("study %s: %d of %d runs failed (resume it to run them again):\n  %s", label, len(failed), todo, strings.Join(failed, "\n  "))
	}
	l.printf("study %s complete: %d runs stored in %s; MTTR_STUDY=%s go tool mage report shows it\n", label, len(plan.Cells), store.Shown(cfg.DB), label)
	return last, nil
}

// copyFor is a copy of the lab that runs one combination of a study.
func (l *Lab) copyFor(c config.Config, ref studyRef, label string) *Lab {
	cp := *l
	cp.Config = c
	cp.Config.Study = label
	cp.study = &ref
	return &cp
}

// plannedTime is how long a run of c is planned to take: its cycles.
func plannedTime(c config.Config) time.Duration {
	return time.Duration(c.RestartCount) * (c.KeepRunning + c.KeepDead)
}

// studyETA is how long the runs from plan.Cells[from] on that are not done
// will take: their planned time, scaled by how much longer than planned
// the runs made so far took (start-up, recovery and settling), or with
// 10 s per run for those before the first ends.
func studyETA(plan store.StudyPlan, done map[int]bool, from int, spent, planned time.Duration, byCell map[store.StudyCell]config.Config) time.Duration {
	var left time.Duration
	runs := 0
	for i := from; i < len(plan.Cells); i++ {
		if !done[i+1] {
			left += plannedTime(byCell[plan.Cells[i]])
			runs++
		}
	}
	if planned > 0 {
		return time.Duration(float64(left) * float64(spent) / float64(planned))
	}
	return left + time.Duration(runs)*10*time.Second
}
