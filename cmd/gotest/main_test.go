package main

import (
	"strings"
	"testing"
)

// TestPartialRunSaysSo runs go test on a test that skips for want of
// something: go test's own lines come through, then the line naming the
// skip, and the exit status is go test's.
func TestPartialRunSaysSo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go test")
	}
	t.Setenv("MTTR_NEEDS_SELF_TEST", "1")
	t.Setenv("MTTR_TEST_NEEDS_UNICORN", "")
	var out, errOut strings.Builder
	code := run([]string{"-count=1", "-run", "^TestSkipsForGotest$", "../../internal/needs"}, &out, &errOut)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := "PARTIAL RUN: skipped for want of a unicorn 1 test (set MTTR_TEST_NEEDS_UNICORN=1 to fail them instead)"
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "ok  \t") || lines[1] != want {
		t.Errorf("exit %d, output:\n%s\nstderr:\n%s\nwant go test's ok line, then %q", code, out.String(), errOut.String(), want)
	}

	t.Setenv("MTTR_TEST_NEEDS_UNICORN", "1") // required: a failure, and nothing skipped
	out.Reset()
	if code := run([]string{"-count=1", "-run", "^TestSkipsForGotest$", "../../internal/needs"}, &out, &errOut); code != 1 || strings.Contains(out.String(), "PARTIAL RUN") || !strings.Contains(out.String(), "FAIL") {
		t.Errorf("exit %d with the unicorn required, output:\n%s", code, out.String())
	}
}
