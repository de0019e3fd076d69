// Package pgtest gives tests a PostgreSQL database of their own: a fresh
// schema in the database MTTR_TEST_POSTGRES names (a postgres:// URL),
// dropped when the test ends. Without MTTR_TEST_POSTGRES the test is
// skipped, unless MTTR_REQUIRE_POSTGRES=1 (set by .ci/run) makes that a
// failure.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// Env names the database the tests use.
const Env = "MTTR_TEST_POSTGRES"

// PasswordUser is a role of the test server that must give its password
// (scram-sha-256) where others are trusted, for tests of a failed
// authentication; .ci/run makes it.
const PasswordUser = "mttr_pw"

// Required reports whether tests must not skip for want of PostgreSQL.
func Required() bool { return os.Getenv("MTTR_REQUIRE_POSTGRES") == "1" }

// URL returns a URL of the test database whose tables go to a schema of
// t's own, or skips t when there is no test database.
func URL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(Env)
	if base == "" {
		if Required() {
			t.Fatalf("MTTR_REQUIRE_POSTGRES=1 but %s is not set", Env)
		}
		t.Skipf("no PostgreSQL: set %s to a postgres:// URL of a database the tests may use", Env)
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
