// Package store keeps MTTR runs and their cycles in SQLite (pure Go,
// modernc.org/sqlite), the embedded default, or in PostgreSQL (pgx) when
// MTTR_DB is a postgres:// URL, with the same schema, migrations and
// queries; nothing outside the package knows which. The schema is a public
// interface, versioned with goose migrations: people query it with sqlite3
// or psql, reports read it while runs write it, and every cycle is
// committed the moment it ends, so a crash loses at most the cycle in
// progress.
package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mttrlab/mttr/internal/dbref"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/mttrlab/mttr/internal/device"
	"github.com/mttrlab/mttr/internal/mttr"
)

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrations embed.FS

// Run statuses.
const (
	StatusRunning     = "running"
	StatusCompleted   = "completed"
	StatusInterrupted = "interrupted"
	StatusFailed      = "failed"
	StatusAbandoned   = "abandoned"
)

// Store is an open results database.
type Store struct {
	db   *sql.DB
	path string // the file, or the URL without its password
	pg   bool   // PostgreSQL, not SQLite
}

// IsPostgres reports whether ref, MTTR_DB, names a PostgreSQL database
// (a postgres:// or postgresql:// URL) rather than an SQLite file.
func IsPostgres(ref string) bool { return dbref.IsPostgres(ref) }

// rebind writes query's ? placeholders as PostgreSQL's $1, $2 … (our
// queries have no ? of their own).
func (s *Store) rebind(query string) string {
	if !s.pg || !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// bytewise makes an ORDER BY of text sort by bytes, as SQLite does, in
// PostgreSQL too, whatever the database's collation.
func (s *Store) bytewise() string {
	if s.pg {
		return ` COLLATE "C"`
	}
	return ""
}

func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return s.db.ExecContext(ctx, s.rebind(query), args...)
}

func (s *Store) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return s.db.QueryContext(ctx, s.rebind(query), args...)
}

func (s *Store) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return s.db.QueryRowContext(ctx, s.rebind(query), args...)
}

// ErrNotMTTR reports a file that is not an MTTR database.
var ErrNotMTTR = errors.New("not an MTTR results database")

// ErrNewerSchema reports a database written by a newer MTTR lab.
var ErrNewerSchema = errors.New("database schema is newer than this tool")

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Set("mode", "ro")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
	}
	// The path is a URI's: a %, ? or # in a file name must be escaped.
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

func (s *Store) provider() (*goose.Provider, error) {
	dir, dialect := "migrations/sqlite", goose.DialectSQLite3
	if s.pg {
		dir, dialect = "migrations/postgres", goose.DialectPostgres
	}
	sub, err := fs.Sub(migrations, dir)
	if err != nil {
		return nil, err
	}
	if s.pg { // runners starting at once on a new database migrate one at a time
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return nil, err
		}
		return goose.NewProvider(dialect, s.db, sub, goose.WithSessionLocker(locker))
	}
	return goose.NewProvider(dialect, s.db, sub)
}

// Open opens the database ref names for writing and brings its schema up
// to date: an SQLite file (created, with its directory, if needed) or a
// PostgreSQL URL (the database must exist).
func Open(ctx context.Context, path string) (*Store, error) {
	if err := dbref.Check(path); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if IsPostgres(path) {
		s, err := openPostgres(ctx, path, false)
		if err != nil {
			return nil, err
		}
		if err := s.prepare(ctx); err != nil {
			s.db.Close()
			return nil, err
		}
		return s, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	undo := sidecars(path)
	if err := check(ctx, path); err != nil {
		undo()
		return nil, err
	}
	if err := writable(path); err != nil {
		undo()
		return nil, err
	}
	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		undo()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	s := &Store{db: db, path: path}
	if err := s.prepare(ctx); err != nil {
		db.Close()
		undo()
		return nil, err
	}
	return s, nil
}

// sidecars returns a function that removes the WAL and shared-memory files
// beside the SQLite file path that do not exist now: what a failed open
// made, and nobody else needs.
func sidecars(path string) (undo func()) {
	var made []string
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Lstat(path + suffix); errors.Is(err, fs.ErrNotExist) {
			made = append(made, path+suffix)
		}
	}
	return func() {
		for _, f := range made {
			_ = os.Remove(f)
		}
	}
}

// writable refuses an SQLite file this process cannot write, before a run
// that would fail at its first row.
func writable(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil // made on open
	case err != nil:
		return fmt.Errorf("store %s: cannot be written: %w", path, errors.Unwrap(err))
	}
	return f.Close()
}

// prepare brings a store opened for writing up to date: its schema, and
// the keys of runs stored before they were redacted.
func (s *Store) prepare(ctx context.Context) error {
	if err := s.migrate(ctx); err != nil {
		return err
	}
	return s.redactKeys(ctx)
}

// SettingsJSON is how a run's settings are stored in config_json: a JSON
// object as people read it with sqlite3 (no HTML escaping of "<").
func SettingsJSON(vars map[string]string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(vars) // a map of strings always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// redactKeys replaces the connection string's key with its fingerprint in
// runs stored before keys were redacted on the way in.
func (s *Store) redactKeys(ctx context.Context) error {
	rows, err := s.query(ctx, `SELECT id, config_json FROM runs WHERE config_json LIKE '%SharedAccessKey=%'`)
	if err != nil {
		return fmt.Errorf("store: redact keys: %w", err)
	}
	fixed := map[int64]string{}
	for rows.Next() {
		var id int64
		var raw string
		if err := rows.Scan(&id, &raw); err != nil {
			rows.Close()
			return fmt.Errorf("store: redact keys: %w", err)
		}
		var vars map[string]string
		if json.Unmarshal([]byte(raw), &vars) != nil {
			continue
		}
		cs := vars["MTTR_CONNECTION_STRING"]
		if r := device.RedactConnectionString(cs); r != cs {
			vars["MTTR_CONNECTION_STRING"] = r
			fixed[id] = SettingsJSON(vars)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: redact keys: %w", err)
	}
	for id, cfg := range fixed {
		if _, err := s.exec(ctx, `UPDATE runs SET config_json = ? WHERE id = ?`, cfg, id); err != nil {
			return fmt.Errorf("store: redact keys of run %d: %w", id, err)
		}
	}
	return nil
}

// check looks at what is at path before anything writes to it: a
// directory, or a file that is not an MTTR database (another application's
// SQLite file, which opening for writing would switch to WAL), is refused
// as it is. A missing or empty file is fine: Open creates the schema.
func check(ctx context.Context, path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("store: %w", err)
	case fi.IsDir():
		return fmt.Errorf("store %s: is a directory; name a file", path)
	case fi.Size() == 0:
		return nil
	}
	db, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		return fmt.Errorf("store %s: %w", path, err)
	}
	defer db.Close()
	have, err := (&Store{db: db, path: path}).Version(ctx)
	if err != nil && !errors.Is(err, errEmpty) {
		return err
	}
	if have > Latest() {
		return fmt.Errorf("store %s: schema version %d: %w (this tool knows up to %d)", path, have, ErrNewerSchema, Latest())
	}
	return nil
}

// OpenReadOnly opens an existing database without changing it. It fails
// with ErrNotMTTR or ErrNewerSchema when the file is not one it can read.
func OpenReadOnly(ctx context.Context, path string) (*Store, error) {
	if err := dbref.Check(path); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if IsPostgres(path) {
		s, err := openPostgres(ctx, path, true)
		if err != nil {
			return nil, err
		}
		if err := s.current(ctx); err != nil {
			s.db.Close()
			return nil, err
		}
		return s, nil
	}
	if fi, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	} else if fi.IsDir() {
		return nil, fmt.Errorf("store %s: is a directory; name a file", path)
	}
	undo := sidecars(path)
	db, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		undo()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	s := &Store{db: db, path: path}
	if err := s.current(ctx); err != nil {
		db.Close()
		undo()
		return nil, err
	}
	return s, nil
}

// current checks that the schema is the one this tool writes.
func (s *Store) current(ctx context.Context) error {
	have, err := s.Version(ctx)
	if err != nil {
		return err
	}
	switch want := Latest(); {
	case have > want:
		return fmt.Errorf("store %s: schema version %d: %w (this tool knows up to %d)", s.path, have, ErrNewerSchema, want)
	case have < want:
		return fmt.Errorf("store %s: schema version %d, want %d: run `mage mttr` once to migrate it", s.path, have, want)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	have, err := s.Version(ctx)
	if err != nil && !errors.Is(err, errEmpty) {
		return err
	}
	if have > Latest() {
		return fmt.Errorf("store %s: schema version %d: %w (this tool knows up to %d)", s.path, have, ErrNewerSchema, Latest())
	}
	p, err := s.provider()
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("store %s: migrate: %w", s.path, err)
	}
	return nil
}

var errEmpty = errors.New("empty database")

// Latest is the schema version this tool writes.
func Latest() int64 {
	entries, _ := fs.Glob(migrations, "migrations/sqlite/*.sql")
	return int64(len(entries))
}

// Version returns the database's schema version. A file that is not SQLite,
// or SQLite without MTTR tables, gives ErrNotMTTR; an empty new file gives
// an error wrapping errEmpty.
func (s *Store) Version(ctx context.Context) (int64, error) {
	var tables int
	count := `SELECT count(*) FROM sqlite_master`
	if s.pg {
		count = `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()`
	}
	if err := s.db.QueryRowContext(ctx, count).Scan(&tables); err != nil {
		if strings.Contains(err.Error(), "not a database") {
			return 0, fmt.Errorf("store %s: %w: %v", s.path, ErrNotMTTR, err)
		}
		return 0, fmt.Errorf("store %s: %w", s.path, err)
	}
	if tables == 0 {
		return 0, fmt.Errorf("store %s: %w", s.path, errEmpty)
	}
	var v int64
	err := s.db.QueryRowContext(ctx, `SELECT max(version_id) FROM goose_db_version WHERE is_applied`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("store %s: %w", s.path, ErrNotMTTR)
	}
	return v, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path is where the database lives.
func (s *Store) Path() string { return s.path }

// DB is the underlying database, for tests and benchmarks that set up or
// inspect rows directly.
func (s *Store) DB() *sql.DB { return s.db }

// Run is one experiment's row in runs.
type Run struct {
	ID            int64
	StartedAt     time.Time
	FinishedAt    time.Time // zero while running
	Status        string
	Error         string
	Label         string
	Fault         string
	KeepAlive     time.Duration
	KeepDead      time.Duration
	KeepRunning   time.Duration
	Devices       int
	CyclesPlanned int
	ConfigJSON    string
	ToolVersion   string
	EngineVersion string
	ImageID       string
	Host          string // MTTR_HOST
	Machine       string // host name of the machine that ran it
	PID           int
	Client        string        // "paho" (ours) or "external"; empty means paho
	ClockOffset   time.Duration // engine clock minus ours
	ClockError    time.Duration // uncertainty of ClockOffset
	Broker        string        // "docker" or "process"; empty means docker
	NetNS         string        // for docker: "holder" or "plain"; empty for a process
	StudyID       int64         // the study it belongs to; 0 for none
	StudyPosition int           // its place in the study's order, from 1
}

// StartRun inserts r with status running and returns its id.
func (s *Store) StartRun(ctx context.Context, r Run) (int64, error) {
	if r.Client == "" {
		r.Client = "paho"
	}
	if r.Broker == "" {
		r.Broker = "docker"
	}
	var id int64
	err := s.queryRow(ctx, `INSERT INTO runs
		(started_at, status, label, fault, keep_alive_ms, keep_dead_ms, keep_running_ms, devices, cycles_planned,
		 config_json, tool_version, engine_version, image_id, host, machine, pid, client, clock_offset_ms, clock_uncertainty_ms,
		 broker, netns, study_id, study_position)
		VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		r.StartedAt.UnixNano(), r.Label, r.Fault, r.KeepAlive.Milliseconds(), r.KeepDead.Milliseconds(),
		r.KeepRunning.Milliseconds(), r.Devices, r.CyclesPlanned, r.ConfigJSON, r.ToolVersion, r.EngineVersion,
		r.ImageID, r.Host, r.Machine, r.PID, r.Client, msf(r.ClockOffset), msf(r.ClockError), r.Broker, r.NetNS,
		null(r.StudyID), null(int64(r.StudyPosition))).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("store: start run: %w", err)
	}
	return id, nil
}

// SetImage records the image and engine a run uses, once they are known.
func (s *Store) SetImage(ctx context.Context, id int64, imageID, engineVersion string) error {
	_, err := s.exec(ctx, `UPDATE runs SET image_id = ?, engine_version = ? WHERE id = ?`, imageID, engineVersion, id)
	if err != nil {
		return fmt.Errorf("store: run %d: %w", id, err)
	}
	return nil
}

// FinishRun sets a run's final status, its end time (now) and error text.
func (s *Store) FinishRun(ctx context.Context, id int64, status, errText string) error {
	return s.FinishRunAt(ctx, id, status, errText, time.Now())
}

// FinishRunAt is FinishRun with the end time given (a run that ended
// elsewhere); a zero time leaves finished_at NULL (a run still running).
func (s *Store) FinishRunAt(ctx context.Context, id int64, status, errText string, at time.Time) error {
	var ns int64
	if !at.IsZero() {
		ns = at.UnixNano()
	}
	_, err := s.exec(ctx, `UPDATE runs SET status = ?, error = NULLIF(?, ''), finished_at = ? WHERE id = ?`,
		status, errText, null(ns), id)
	if err != nil {
		return fmt.Errorf("store: finish run %d: %w", id, err)
	}
	return nil
}

// SaveCycle commits the rows of one cycle (one per device) in a single
// transaction.
func (s *Store) SaveCycle(ctx context.Context, runID int64, rows []mttr.Cycle) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: save cycle: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, s.rebind(`INSERT INTO cycles
		(run_id, cycle, device, fault_at, lost_at, healed_at, listening_at, resumed_at, held_until_at, ready_at,
		 reconnected_at, first_ack_at, last_ack_before_at, interrupted, reconnect_attempts, published, acknowledged,
		 delivered, lost, duplicated, error,
		 listens, resubscribed_at, commands_back_at, first_c2d_at, session, c2d_sent, c2d_received, c2d_lost, c2d_duplicated, attempt_at, puback_median_ns, broker_address, broker_accept_peak,
		 bed_window_ns, bed_tool_ns, bed_broker_ns, bed_clients_ns, bed_host_ns, bed_cores, bed_late_ns)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULLIF(?, ''),
		 ?, ?, ?, ?, NULLIF(?, ''), ?, ?, ?, ?, ?, ?, NULLIF(?, ''), ?,
		 ?, ?, ?, ?, ?, ?, ?)`))
	if err != nil {
		return fmt.Errorf("store: save cycle: %w", err)
	}
	defer stmt.Close()
	for _, c := range rows {
		args := []any{runID, c.Cycle, c.Device,
			null(c.FaultAt), null(c.LostAt), null(c.HealedAt), null(c.ListeningAt), null(c.ResumedAt), null(c.HeldUntilAt), null(c.ReadyAt),
			null(c.ReconnectedAt), null(c.FirstAckAt), null(c.LastAckBeforeAt), b2i(c.Interrupted),
			c.ReconnectAttempts, c.Published, c.Acknowledged, c.Delivered, c.Lost, c.Duplicated, c.Error,
			b2i(c.Listens), null(c.ResubscribedAt), null(c.CommandsBackAt), null(c.FirstC2DAt), c.Session, c.C2DSent, c.C2DReceived, c.C2DLost, c.C2DDuplicated, null(c.AttemptAt), null(int64(c.PubackMedian)), c.BrokerAddress, null(int64(c.BrokerAcceptPeak))}
		_, err := stmt.ExecContext(ctx, append(args, bedArgs(c.Bed)...)...)
		if err != nil {
			return fmt.Errorf("store: save cycle %d of %s: %w", c.Cycle, c.Device, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: save cycle: %w", err)
	}
	return nil
}

// IsDuplicate reports whether err is the database refusing a row whose key
// it has already: a cycle written twice.
func IsDuplicate(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505" // unique_violation
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE
	}
	return false
}

// b2i stores a flag as 0 or 1: an INTEGER (BIGINT) column in both
// databases.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// bedArgs are the bed_* columns of a cycle: NULL when the window was not
// measured, and bed_broker_ns NULL when the broker's CPU was not.
func bedArgs(b mttr.BedCost) []any {
	if !b.Measured() {
		return []any{nil, nil, nil, nil, nil, nil, nil}
	}
	var broker any = int64(b.Broker)
	if b.Broker < 0 {
		broker = nil
	}
	return []any{int64(b.Window), int64(b.Tool), broker, int64(b.Clients), int64(b.Host), b.Cores, int64(b.Late)}
}

func null(ns int64) any {
	if ns == 0 {
		return nil
	}
	return ns
}

// Running returns the runs still marked running.
func (s *Store) Running(ctx context.Context) ([]Run, error) {
	rows, err := s.query(ctx, `SELECT id, machine, pid FROM runs WHERE status = 'running'`)
	if err != nil {
		return nil, fmt.Errorf("store: running runs: %w", err)
	}
	defer rows.Close()
	var runs []Run
	for rows.Next() {
		var r Run
		if err := rows.Scan(&r.ID, &r.Machine, &r.PID); err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	return runs, rows.Err()
}

// Cycles returns a run's cycles ordered by cycle and device.
func (s *Store) Cycles(ctx context.Context, runID int64) ([]mttr.Cycle, error) {
	rows, err := s.query(ctx, `SELECT cycle, device,
		coalesce(fault_at, 0), coalesce(lost_at, 0), coalesce(healed_at, 0), coalesce(listening_at, 0),
		coalesce(resumed_at, 0), coalesce(held_until_at, 0), coalesce(ready_at, 0), coalesce(reconnected_at, 0), coalesce(first_ack_at, 0),
		coalesce(last_ack_before_at, 0), interrupted, reconnect_attempts, published, acknowledged, delivered, lost,
		duplicated, coalesce(error, ''),
		listens, coalesce(resubscribed_at, 0), coalesce(commands_back_at, 0), coalesce(first_c2d_at, 0), coalesce(session, ''), c2d_sent, c2d_received, c2d_lost, c2d_duplicated, coalesce(attempt_at, 0), coalesce(puback_median_ns, 0), coalesce(broker_address, ''), coalesce(broker_accept_peak, 0),
		coalesce(bed_window_ns, 0), coalesce(bed_tool_ns, 0), coalesce(bed_broker_ns, -1), coalesce(bed_clients_ns, 0), coalesce(bed_host_ns, 0), coalesce(bed_cores, 0), coalesce(bed_late_ns, 0)
		FROM cycles WHERE run_id = ? ORDER BY cycle, device`+s.bytewise(), runID)
	if err != nil {
		return nil, fmt.Errorf("store: cycles of run %d: %w", runID, err)
	}
	defer rows.Close()
	var out []mttr.Cycle
	for rows.Next() {
		var c mttr.Cycle
		if err := rows.Scan(&c.Cycle, &c.Device, &c.FaultAt, &c.LostAt, &c.HealedAt, &c.ListeningAt, &c.ResumedAt,
			&c.HeldUntilAt, &c.ReadyAt, &c.ReconnectedAt, &c.FirstAckAt, &c.LastAckBeforeAt, &c.Interrupted, &c.ReconnectAttempts, &c.Published,
			&c.Acknowledged, &c.Delivered, &c.Lost, &c.Duplicated, &c.Error,
			&c.Listens, &c.ResubscribedAt, &c.CommandsBackAt, &c.FirstC2DAt, &c.Session, &c.C2DSent, &c.C2DReceived, &c.C2DLost, &c.C2DDuplicated, &c.AttemptAt, &c.PubackMedian, &c.BrokerAddress, &c.BrokerAcceptPeak,
			&c.Bed.Window, &c.Bed.Tool, &c.Bed.Broker, &c.Bed.Clients, &c.Bed.Host, &c.Bed.Cores, &c.Bed.Late); err != nil {
			return nil, fmt.Errorf("store: cycles of run %d: %w", runID, err)
		}
		if !c.Bed.Measured() {
			c.Bed = mttr.BedCost{}
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// GetRun returns the run with id.
func (s *Store) GetRun(ctx context.Context, id int64) (Run, error) {
	runs, err := s.queryRuns(ctx, `WHERE id = ?`, id)
	if err != nil {
		return Run{}, err
	}
	if len(runs) == 0 {
		return Run{}, fmt.Errorf("run %d: %w", id, ErrNoRun)
	}
	return runs[0], nil
}

func ms(v int64) time.Duration { return time.Duration(v) * time.Millisecond }

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
