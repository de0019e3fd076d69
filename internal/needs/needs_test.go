package needs

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSummary(t *testing.T) {
	for _, tc := range []struct{ name, log, want string }{
		{"nothing skipped", "", ""},
		{"one need, each test once",
			"missing\tDocker\tMTTR_REQUIRE_DOCKER\tTestA\nmissing\tDocker\tMTTR_REQUIRE_DOCKER\tTestB\nmissing\tDocker\tMTTR_REQUIRE_DOCKER\tTestB\n",
			"PARTIAL RUN: skipped for want of Docker 2 tests (set MTTR_REQUIRE_DOCKER=1 to fail them instead)"},
		{"needs in the order first seen, one variable named once",
			"missing\tPostgreSQL\tMTTR_REQUIRE_POSTGRES\tTestS\nmissing\tDocker\tMTTR_REQUIRE_DOCKER\tTestA\nmissing\tPython with paho-mqtt\tMTTR_REQUIRE_DOCKER\tTestP\n",
			"PARTIAL RUN: skipped for want of PostgreSQL 1 test, Docker 1, Python with paho-mqtt 1 (set MTTR_REQUIRE_POSTGRES=1 MTTR_REQUIRE_DOCKER=1 to fail them instead)"},
		{"-short",
			"short\tDocker\tMTTR_REQUIRE_DOCKER\tTestA\nshort\tNode\tMTTR_REQUIRE_NODE\tTestN\nshort\tDocker\tMTTR_REQUIRE_DOCKER\tTestB\n",
			"PARTIAL RUN: skipped in -short mode, needing Docker 2 tests, Node 1"},
		{"both, and a line that is not a note",
			"garbage\nmissing\ta browser\tMTTR_REQUIRE_BROWSER\tTestHTML\nshort\tDocker\tMTTR_REQUIRE_DOCKER\tTestA\n",
			"PARTIAL RUN: skipped for want of a browser 1 test (set MTTR_REQUIRE_BROWSER=1 to fail them instead); skipped in -short mode, needing Docker 1 test"},
	} {
		if got := Summary(tc.log); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

// TestMissingNotes has a need missing in a subtest: the subtest is
// skipped, and the skip log names it.
func TestMissingNotes(t *testing.T) {
	log := filepath.Join(t.TempDir(), "skipped")
	t.Setenv(LogEnv, log)
	need := Need{"a unicorn", "MTTR_TEST_NEEDS_UNICORN"}
	t.Setenv(need.Require, "")
	ran := t.Run("needs a unicorn", func(t *testing.T) {
		need.Missing(t, "none in the stable")
		t.Error("still running after Missing")
	})
	if !ran {
		t.Error("the skipped subtest failed")
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "missing\ta unicorn\tMTTR_TEST_NEEDS_UNICORN\tTestMissingNotes/needs_a_unicorn\n"; got != want {
		t.Errorf("skip log %q, want %q", got, want)
	}
}

// selfTestEnv makes TestSkipsForGotest skip for want of a unicorn, as
// cmd/gotest's test asks it to.
const selfTestEnv = "MTTR_NEEDS_SELF_TEST"

// TestSkipsForGotest skips for want of a unicorn when selfTestEnv is set,
// and does nothing otherwise.
func TestSkipsForGotest(t *testing.T) {
	if os.Getenv(selfTestEnv) == "1" {
		Need{"a unicorn", "MTTR_TEST_NEEDS_UNICORN"}.Missing(t, "none in the stable")
	}
}
