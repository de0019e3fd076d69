// Package dbref reads a reference to a results database, as MTTR_DB and
// the file arguments of export and import give it: a PostgreSQL URL
// (postgres:// or postgresql://) or an SQLite file path. It believes a
// reference is a secret until shown: whatever looks like a URL has its
// password masked wherever it is printed or stored, and a URL of any other
// scheme is refused rather than taken for a file name.
package dbref

import (
	"fmt"
	"net/url"
	"strings"
)

// IsPostgres reports whether ref is a PostgreSQL URL.
func IsPostgres(ref string) bool {
	return strings.HasPrefix(ref, "postgres://") || strings.HasPrefix(ref, "postgresql://")
}

// Check refuses a reference of another scheme ("mysql://…"), naming it
// with its password masked.
func Check(ref string) error {
	if i := strings.Index(ref, "://"); i > 0 && !IsPostgres(ref) {
		return fmt.Errorf("%q: a %s URL, and only postgres:// and postgresql:// URLs or SQLite file paths are databases here", Shown(ref), ref[:i])
	}
	return nil
}

// Shown is ref as it may be printed or stored: a URL with its password as
// xxxxx (in its user part or a password or sslpassword parameter); a path
// as it is.
func Shown(ref string) string {
	shown, _ := Redact(ref)
	return shown
}

// Redact returns ref as Shown does, and the password it masked.
func Redact(ref string) (shown, secret string) {
	if !strings.Contains(ref, "://") {
		return ref, ""
	}
	u, err := url.Parse(ref)
	if err != nil {
		return "(a URL that does not parse)", ""
	}
	if p, ok := u.User.Password(); ok {
		secret = p
	}
	q := u.Query()
	for _, k := range []string{"password", "sslpassword"} {
		if v := q.Get(k); v != "" {
			if secret == "" {
				secret = v
			}
			q.Set(k, "xxxxx")
			u.RawQuery = q.Encode()
		}
	}
	return u.Redacted(), secret
}
