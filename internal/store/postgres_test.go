package store

import (
	"errors"
	"fmt"
	"github.com/mttrlab/mttr/internal/dbref"
	"io/fs"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/mttrlab/mttr/internal/pgtest"
)

// TestPostgresErrors: a URL that does not parse, a database that does not
// exist, a server that is not there and a wrong password each give one
// line that names MTTR_DB and never the password.
func TestPostgresErrors(t *testing.T) {
	base, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	const secret = "s3cret-Passw0rd"
	with := func(f func(u *url.URL)) string {
		u := *base
		f(&u)
		return u.String()
	}
	for _, tc := range []struct {
		name, ref, want string
	}{
		{"does not parse", "postgres://u:" + secret + "@[::1/db", "store (a URL that does not parse)"},
		{"no such database", with(func(u *url.URL) { u.Path = "/mttr_no_such_db"; u.User = url.UserPassword("postgres", secret) }), `database "mttr_no_such_db" does not exist`},
		{"no server", with(func(u *url.URL) {
			q := u.Query()
			q.Set("host", t.TempDir())
			u.RawQuery = q.Encode()
			u.User = url.UserPassword("postgres", secret)
		}), "store postgres://"},
		{"wrong password", with(func(u *url.URL) { u.User = url.UserPassword(pgtest.PasswordUser, secret) }), "password authentication failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, open := range []func() error{
				func() error { s, err := Open(t.Context(), tc.ref); closeIf(s); return err },
				func() error { s, err := OpenReadOnly(t.Context(), tc.ref); closeIf(s); return err },
			} {
				err := open()
				if err == nil {
					t.Fatal("opened")
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, "store ") || !strings.Contains(msg, tc.want) || strings.Contains(msg, secret) || strings.Contains(msg, "\n") {
					t.Errorf("error %q: want one line starting with the shown URL, with %q, without the password", msg, tc.want)
				}
			}
		})
	}
}

func closeIf(s *Store) {
	if s != nil {
		s.Close()
	}
}

// TestRedaction: the password of a URL, in its user part or as a
// parameter, never shows in what is printed of it or of an error that
// carries it, and an error spread over lines is one line.
func TestRedaction(t *testing.T) {
	for _, ref := range []string{
		"postgres://u:pw-123@db.example/x",
		"postgresql://u@db.example/x?password=pw-123",
		"postgres://u@db.example/x?sslpassword=pw-123",
	} {
		shown, secret := dbref.Redact(ref)
		if strings.Contains(shown, "pw-123") || secret != "pw-123" || !strings.Contains(shown, "xxxxx") {
			t.Errorf("dbref.Redact(%q) = %q, %q", ref, shown, secret)
		}
		if got := Shown(ref); got != shown {
			t.Errorf("Shown(%q) = %q, want %q", ref, got, shown)
		}
		err := &hidden{err: errors.New("dial a: refused pw-123\ndial b: auth pw-123"), secret: secret}
		if msg := err.Error(); strings.Contains(msg, "pw-123") || strings.Contains(msg, "\n") {
			t.Errorf("error %q", msg)
		}
	}
	if got := Shown("results/mttr.db"); got != "results/mttr.db" {
		t.Errorf("Shown(a path) = %q", got)
	}
}

// TestMigrationSets: the PostgreSQL migrations are the SQLite ones, version
// for version, so that Latest holds for both.
func TestMigrationSets(t *testing.T) {
	for _, dir := range []string{"sqlite", "postgres"} {
		entries, err := fs.Glob(migrations, "migrations/"+dir+"/*.sql")
		if err != nil || int64(len(entries)) != Latest() {
			t.Errorf("%s: %d migrations, want %d (%v)", dir, len(entries), Latest(), err)
		}
		for i, e := range entries {
			if want := fmt.Sprintf("%05d_", i+1); !strings.HasPrefix(path.Base(e), want) {
				t.Errorf("%s: migration %d is %s", dir, i+1, e)
			}
		}
	}
}
