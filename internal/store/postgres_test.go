package store

import (
	"net/url"
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
		{"does not parse", "postgres://u:" + secret + "@[::1/db", "MTTR_DB="},
		{"no such database", with(func(u *url.URL) { u.Path = "/mttr_no_such_db"; u.User = url.UserPassword("postgres", secret) }), `database "mttr_no_such_db" does not exist`},
		{"no server", with(func(u *url.URL) {
			q := u.Query()
			q.Set("host", t.TempDir())
			u.RawQuery = q.Encode()
			u.User = url.UserPassword("postgres", secret)
		}), "MTTR_DB="},
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
				if !strings.HasPrefix(msg, "MTTR_DB=") || !strings.Contains(msg, tc.want) || strings.Contains(msg, secret) || strings.Contains(msg, "\n") {
					t.Errorf("error %q: want one line starting MTTR_DB=, with %q, without the password", msg, tc.want)
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
