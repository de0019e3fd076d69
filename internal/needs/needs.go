// Package needs is how a test says that it needs something of the machine
// beyond Go: Docker, PostgreSQL, Node, Python, a browser or a command-line
// tool. Without it the test is skipped, unless the matching MTTR_REQUIRE_*
// variable is 1, which makes that a failure; in -short mode it is skipped
// whatever the machine has. A skip is partial coverage that a green run
// would otherwise hide, so each is noted, one line, in the file that
// MTTR_SKIP_LOG names: cmd/gotest (the README's test command) reads them
// and ends the run with one line saying what was left out.
package needs

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// LogEnv names the file that skips are noted in.
const LogEnv = "MTTR_SKIP_LOG"

// Need is something of the machine that tests need.
type Need struct {
	What    string // what the test needs, as a line names it: "Docker"
	Require string // the variable that makes a missing one a failure
}

// The needs the tests have. Python and mosquitto_pub go with Docker: the
// tests that run them are Docker tests.
var (
	Docker    = Need{"Docker", "MTTR_REQUIRE_DOCKER"}
	Postgres  = Need{"PostgreSQL", "MTTR_REQUIRE_POSTGRES"}
	Node      = Need{"Node", "MTTR_REQUIRE_NODE"}
	Browser   = Need{"a browser", "MTTR_REQUIRE_BROWSER"}
	Python    = Need{"Python with paho-mqtt", "MTTR_REQUIRE_DOCKER"}
	Mosquitto = Need{"mosquitto_pub", "MTTR_REQUIRE_DOCKER"}
	// Conntrack is the kernel's connection-tracking events, which need
	// root; an engine on the host turns tracking on.
	Conntrack = Need{"connection-tracking events (root)", "MTTR_REQUIRE_DOCKER"}
)

// Required reports whether n's variable is 1.
func (n Need) Required() bool { return os.Getenv(n.Require) == "1" }

// Short skips t in -short mode, noting it.
func (n Need) Short(t testing.TB) {
	t.Helper()
	if testing.Short() {
		note("short", n, t.Name())
		t.Skipf("-short: needs %s", n.What)
	}
}

// Missing is called when n is missing, why saying how: it fails t when n
// is required, else notes the skip and skips t.
func (n Need) Missing(t testing.TB, why string) {
	t.Helper()
	if n.Required() {
		t.Fatalf("%s=1 but %s", n.Require, why)
	}
	note("missing", n, t.Name())
	t.Skipf("no %s: %s", n.What, why)
}

// note appends "<kind>\t<what>\t<require>\t<test>" to the skip log, if
// there is one. Lines this short are written whole by one append, however
// many test processes write at once.
func note(kind string, n Need, test string) {
	path := os.Getenv(LogEnv)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "needs: %s: %v\n", LogEnv, err)
		return
	}
	defer f.Close()
	clean := func(s string) string { return strings.NewReplacer("\t", " ", "\n", " ").Replace(s) }
	if _, err := fmt.Fprintf(f, "%s\t%s\t%s\t%s\n", kind, clean(n.What), n.Require, clean(test)); err != nil {
		fmt.Fprintf(os.Stderr, "needs: %s: %v\n", LogEnv, err)
	}
}

// Summary is the line that ends a run whose skip log is log, naming what
// was skipped, for want of what; "" when nothing was. For example:
//
//	PARTIAL RUN: skipped for want of Docker 41 tests, PostgreSQL 6 (set MTTR_REQUIRE_DOCKER=1 MTTR_REQUIRE_POSTGRES=1 to fail them instead)
func Summary(log string) string {
	type group struct {
		what, require string
		tests         map[string]bool
	}
	groups := map[string][]*group{} // kind -> groups in the order first seen
	for line := range strings.Lines(log) {
		f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		if len(f) != 4 {
			continue
		}
		kind, what, require, test := f[0], f[1], f[2], f[3]
		i := slices.IndexFunc(groups[kind], func(g *group) bool { return g.what == what })
		if i < 0 {
			groups[kind] = append(groups[kind], &group{what: what, require: require, tests: map[string]bool{}})
			i = len(groups[kind]) - 1
		}
		groups[kind][i].tests[test] = true
	}
	counts := func(gs []*group) string {
		var parts []string
		for i, g := range gs {
			unit := ""
			if i == 0 {
				unit = " tests"
				if len(g.tests) == 1 {
					unit = " test"
				}
			}
			parts = append(parts, fmt.Sprintf("%s %d%s", g.what, len(g.tests), unit))
		}
		return strings.Join(parts, ", ")
	}
	var out []string
	if gs := groups["missing"]; len(gs) > 0 {
		var vars []string
		for _, g := range gs {
			if v := g.require + "=1"; !slices.Contains(vars, v) {
				vars = append(vars, v)
			}
		}
		out = append(out, fmt.Sprintf("skipped for want of %s (set %s to fail them instead)", counts(gs), strings.Join(vars, " ")))
	}
	if gs := groups["short"]; len(gs) > 0 {
		out = append(out, "skipped in -short mode, needing "+counts(gs))
	}
	if len(out) == 0 {
		return ""
	}
	return "PARTIAL RUN: " + strings.Join(out, "; ")
}
