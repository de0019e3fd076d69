package dbref

import (
	"strings"
	"testing"
)

// TestCheckAndShown guards what a database reference may be and how it is
// shown: PostgreSQL URLs and paths pass, any other scheme is refused, and
// no password of any URL is ever shown.
func TestCheckAndShown(t *testing.T) {
	for _, tc := range []struct {
		ref, shown, err string
	}{
		{"results/mttr.db", "results/mttr.db", ""},
		{"/tmp/a:b.db", "/tmp/a:b.db", ""},
		{"postgres://u:SECRET@h/db", "postgres://u:xxxxx@h/db", ""},
		{"postgresql://u@h/db?password=SECRET", "postgresql://u@h/db?password=xxxxx", ""},
		{"mysql://root:SECRET@127.0.0.1/x", "mysql://root:xxxxx@127.0.0.1/x", `"mysql://root:xxxxx@127.0.0.1/x": a mysql URL`},
		{"sqlite:///tmp/x.db", "sqlite:///tmp/x.db", `a sqlite URL`},
		{"http://h/?sslpassword=SECRET", "http://h/?sslpassword=xxxxx", `a http URL`},
	} {
		if got := Shown(tc.ref); got != tc.shown {
			t.Errorf("Shown(%q) = %q, want %q", tc.ref, got, tc.shown)
		}
		err := Check(tc.ref)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Check(%q) = %v, want %q", tc.ref, err, tc.err)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET") {
			t.Errorf("Check(%q) shows the password: %v", tc.ref, err)
		}
	}
}
