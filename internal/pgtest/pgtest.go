// Package pgtest gives tests a PostgreSQL database of their own: a fresh
// schema in the database MTTR_TEST_POSTGRES names (a postgres:// URL),
// dropped when the test ends, or a whole server of their own that they
// can stop and start (StartServer). Without them the test is skipped,
// unless MTTR_REQUIRE_POSTGRES=1 (set by .ci/run) makes that a failure; in
// -short mode it is skipped always (package needs).
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/mttrlab/mttr/internal/needs"
)

// Env names the database the tests use.
const Env = "MTTR_TEST_POSTGRES"

// PasswordUser is a role of the test server that must give its password
// (scram-sha-256) where others are trusted, for tests of a failed
// authentication; .ci/run makes it.
const PasswordUser = "mttr_pw"

// Required reports whether tests must not skip for want of PostgreSQL.
func Required() bool { return needs.Postgres.Required() }

// URL returns a URL of the test database whose tables go to a schema of
// t's own, or skips t when there is no test database.
func URL(t testing.TB) string {
	t.Helper()
	needs.Postgres.Short(t)
	base := os.Getenv(Env)
	if base == "" {
		needs.Postgres.Missing(t, Env+" is not set: set it to a postgres:// URL of a database the tests may use")
	}
	schema := fmt.Sprintf("t%d_%s", time.Now().UnixNano(), strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '_'
	}, t.Name()))
	if len(schema) > 60 {
		schema = schema[:60]
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		db.Close()
		t.Fatalf("%s: %v", Env, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = db.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`)
		db.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Server is a PostgreSQL server of a test's own, on a Unix socket in a
// temporary directory, that the test can stop and start again: a database
// that goes away in the middle of a run. As root it runs as the postgres
// user, which PostgreSQL requires.
type Server struct {
	URL  string // its database mttr, as MTTR_DB takes it
	bin  string // the directory of initdb and pg_ctl
	dir  string
	port int
	user string // who runs it; empty: this process's user
	up   bool
}

// servers counts the servers started, for their ports (each names only
// its socket file: no server here listens on TCP).
var servers atomic.Int64

// StartServer makes and starts a Server, stopped when the test ends. It
// skips the test when PostgreSQL's programs are not installed, unless
// MTTR_REQUIRE_POSTGRES=1.
func StartServer(t testing.TB) *Server {
	t.Helper()
	needs.Postgres.Short(t)
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		needs.Postgres.Missing(t, "PostgreSQL's initdb is not installed (Debian: postgresql)")
	}
	// Not t.TempDir: its parent is private to this user, and the server
	// may run as another.
	dir, err := os.MkdirTemp("", "mttr-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{bin: filepath.Dir(bins[len(bins)-1]), dir: dir, port: 56000 + os.Getpid()%500*2 + int(servers.Add(1)%2)}
	if os.Geteuid() == 0 {
		s.user = "postgres"
		if err := exec.Command("chown", "-R", s.user, s.dir).Run(); err != nil {
			t.Fatalf("chown %s: %v", s.dir, err)
		}
	}
	s.run(t, "initdb", "-D", filepath.Join(s.dir, "data"), "-A", "trust", "-U", "postgres")
	s.Start(t)
	t.Cleanup(func() { s.Stop(t) })
	s.run(t, "psql", "-h", s.dir, "-p", fmt.Sprint(s.port), "-U", "postgres", "-qc", "CREATE DATABASE mttr")
	s.URL = fmt.Sprintf("postgres://postgres@/mttr?host=%s&port=%d", url.QueryEscape(s.dir), s.port)
	return s
}

// Start starts the server and returns once it accepts connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.run(t, "pg_ctl", "-D", filepath.Join(s.dir, "data"), "-l", filepath.Join(s.dir, "log"), "-w",
		"-o", fmt.Sprintf("-k %s -p %d -c listen_addresses=''", s.dir, s.port), "start")
	s.up = true
}

// Stop kills the server at once (immediate shutdown: every connection
// dropped, as a crash would).
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if s.up {
		s.run(t, "pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop")
		s.up = false
	}
}

func (s *Server) run(t testing.TB, tool string, args ...string) {
	t.Helper()
	bin := filepath.Join(s.bin, tool)
	if tool == "psql" {
		if p, err := exec.LookPath("psql"); err == nil {
			bin = p
		}
	}
	cmd := exec.Command(bin, args...)
	if s.user != "" {
		cmd = exec.Command("runuser", append([]string{"-u", s.user, "--", bin}, args...)...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", tool, args, err, out)
	}
}
