package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrNoRun reports a run id or label that the database does not hold.
var ErrNoRun = errors.New("no such run")

const runColumns = `id, started_at, finished_at, status, error, label, fault, keep_alive_ms, keep_dead_ms,
	keep_running_ms, devices, cycles_planned, config_json, tool_version, engine_version, image_id, host, machine, pid,
	client, coalesce(clock_offset_ms, 0), coalesce(clock_uncertainty_ms, 0), broker, netns,
	coalesce(study_id, 0), coalesce(study_position, 0)`

func scanRun(sc interface{ Scan(...any) error }) (Run, error) {
	var r Run
	var started int64
	var finished sql.NullInt64
	var errText sql.NullString
	var alive, dead, running int64
	var offset, uncertainty float64
	err := sc.Scan(&r.ID, &started, &finished, &r.Status, &errText, &r.Label, &r.Fault, &alive, &dead, &running,
		&r.Devices, &r.CyclesPlanned, &r.ConfigJSON, &r.ToolVersion, &r.EngineVersion, &r.ImageID, &r.Host,
		&r.Machine, &r.PID, &r.Client, &offset, &uncertainty, &r.Broker, &r.NetNS, &r.StudyID, &r.StudyPosition)
	if err != nil {
		return r, err
	}
	r.StartedAt = time.Unix(0, started)
	if finished.Valid {
		r.FinishedAt = time.Unix(0, finished.Int64)
	}
	r.Error = errText.String
	r.KeepAlive, r.KeepDead, r.KeepRunning = ms(alive), ms(dead), ms(running)
	r.ClockOffset = time.Duration(offset * float64(time.Millisecond))
	r.ClockError = time.Duration(uncertainty * float64(time.Millisecond))
	return r, nil
}

func (s *Store) queryRuns(ctx context.Context, where string, args ...any) ([]Run, error) {
	rows, err := s.query(ctx, `SELECT `+runColumns+` FROM runs `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("store: runs: %w", err)
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("store: runs: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Runs returns the newest limit runs, newest first.
func (s *Store) Runs(ctx context.Context, limit int) ([]Run, error) {
	return s.queryRuns(ctx, `ORDER BY id DESC LIMIT ?`, limit)
}

// FindRun resolves ref, a run id or a label, to a run; a label names the
// newest run that carries it.
func (s *Store) FindRun(ctx context.Context, ref string) (Run, error) {
	var runs []Run
	var err error
	if id, perr := strconv.ParseInt(ref, 10, 64); perr == nil {
		runs, err = s.queryRuns(ctx, `WHERE id = ? OR label = ? ORDER BY id = ? DESC, id DESC LIMIT 1`, id, ref, id)
	} else {
		runs, err = s.queryRuns(ctx, `WHERE label = ? ORDER BY id DESC LIMIT 1`, ref)
	}
	if err != nil {
		return Run{}, err
	}
	if len(runs) == 0 {
		return Run{}, fmt.Errorf("run %q: %w (give a run id or a label)", ref, ErrNoRun)
	}
	return runs[0], nil
}

// LatestCompleted returns the newest completed run, or ErrNoRun.
func (s *Store) LatestCompleted(ctx context.Context) (Run, error) {
	runs, err := s.queryRuns(ctx, `WHERE status = 'completed' ORDER BY id DESC LIMIT 1`)
	if err != nil {
		return Run{}, err
	}
	if len(runs) == 0 {
		return Run{}, fmt.Errorf("no completed run: %w", ErrNoRun)
	}
	return runs[0], nil
}

// PreviousOfScenario returns the newest completed run before r with the same
// fault, keep-dead, number of devices and test bed (broker and network
// namespace), or ErrNoRun.
func (s *Store) PreviousOfScenario(ctx context.Context, r Run) (Run, error) {
	runs, err := s.queryRuns(ctx, `WHERE status = 'completed' AND fault = ? AND keep_dead_ms = ? AND devices = ?
		AND broker = ? AND netns = ? AND id < ? ORDER BY id DESC`,
		r.Fault, r.KeepDead.Milliseconds(), r.Devices, r.Broker, r.NetNS, r.ID)
	if err != nil {
		return Run{}, err
	}
	for _, prev := range runs {
		if prev.Network() == r.Network() && prev.DeviceTLS() == r.DeviceTLS() {
			return prev, nil
		}
	}
	net := ""
	for _, n := range []string{r.Network(), r.DeviceTLS()} {
		if n != "" {
			net += ", " + n
		}
	}
	return Run{}, fmt.Errorf("no earlier completed run with fault %s, keep-dead %s, %d devices, %s%s: %w",
		r.Fault, r.KeepDead, r.Devices, r.TestBed(), net, ErrNoRun)
}

// Network is what the run's network path did, from its settings: the
// whole run's link and the network fault's own parameter ("link 3g, latency
// 200ms"); empty for a broker fault on a plain path. Runs are comparable
// only when it is the same.
func (r Run) Network() string {
	var vars map[string]string
	_ = json.Unmarshal([]byte(r.ConfigJSON), &vars)
	var parts []string
	if v := vars["MTTR_LINK"]; v != "" {
		parts = append(parts, "link "+v)
	}
	param := map[string]string{"loss": "MTTR_LOSS", "latency": "MTTR_LATENCY", "bandwidth": "MTTR_RATE", "idle": "MTTR_IDLE_TIMEOUT"}
	if key, ok := param[r.Fault]; ok {
		p := r.Fault + " " + vars[key]
		if j := vars["MTTR_JITTER"]; r.Fault == "latency" && j != "" && j != "0s" {
			p += " ± " + j
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

// DeviceTLS is our devices' TLS policy, from the run's settings, where it
// is not Go's default ("TLS resumption, groups X25519,P-256"); empty for
// the default and for external clients, which bring their own. Runs are
// comparable only when it is the same.
func (r Run) DeviceTLS() string {
	var vars map[string]string
	_ = json.Unmarshal([]byte(r.ConfigJSON), &vars)
	if vars["MTTR_CLIENT"] == "external" {
		return ""
	}
	var parts []string
	if vars["MTTR_TLS_RESUMPTION"] == "true" {
		parts = append(parts, "TLS resumption")
	}
	if g := vars["MTTR_TLS_GROUPS"]; g != "" {
		parts = append(parts, "TLS groups "+g)
	}
	return strings.Join(parts, ", ")
}

// TestBed names where the broker ran: "docker, netns holder", "docker,
// netns plain" or "process".
func (r Run) TestBed() string {
	if r.Broker == "" || r.Broker == "docker" {
		return "docker, netns " + r.NetNS
	}
	return r.Broker
}
