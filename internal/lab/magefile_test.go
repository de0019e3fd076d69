package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMagefileTargets compiles magefile.go with mage and checks that every
// target is listed with help text that starts with a verb.
func TestMagefileTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the magefile")
	}
	cmd := exec.CommandContext(t.Context(), "go", "tool", "mage", "-l")
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mage -l: %v\n%s", err, out)
	}
	for target, verb := range map[string]string{
		"certs": "writes", "image": "builds", "rmi": "removes", "up": "runs", "down": "stops", "send": "connects",
		"mttr": "runs", "report": "prints", "compare": "compares", "check": "fails", "export": "writes", "import": "loads",
	} {
		if !strings.Contains(string(out), "  "+target+" ") || !strings.Contains(string(out), " "+verb+" ") {
			t.Errorf("mage -l lacks %q with %q:\n%s", target, verb, out)
		}
	}
}

// TestParallelMage runs 16 `go tool mage report` at once in this checkout,
// from a mage cache of their own (so they also race to compile the
// magefile first): each must succeed. Then 16 more: the binary is
// current, so none waits for another to compile, or says it does.
func TestParallelMage(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the magefile")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "mttr.db")
	writeRuns(t, db, 2)
	env := append(os.Environ(), "MAGEFILE_CACHE="+filepath.Join(dir, "mage"), "MTTR_DB="+db, "MTTR_HTML="+filepath.Join(dir, "report.html"))
	const n = 16
	for round := range 2 {
		outs := make(chan string, n)
		errs := make(chan error, n)
		for range n {
			go func() {
				cmd := exec.CommandContext(t.Context(), "go", "tool", "mage", "report")
				cmd.Dir, cmd.Env = "../..", env
				out, err := cmd.CombinedOutput()
				if err == nil && !strings.Contains(string(out), "Runs in "+db) {
					err = errors.New("no run list")
				}
				if err != nil {
					err = fmt.Errorf("%w:\n%s", err, out)
				}
				outs <- string(out)
				errs <- err
			}()
		}
		failed, waited := 0, 0
		for range n {
			if strings.Contains(<-outs, "waiting for another mage call") {
				waited++
			}
			if err := <-errs; err != nil {
				failed++
				if failed == 1 {
					t.Errorf("round %d: go tool mage report: %v", round+1, err)
				}
			}
		}
		if failed > 0 {
			t.Errorf("round %d: %d of %d parallel calls failed", round+1, failed, n)
		}
		if round == 1 && waited > 0 {
			t.Errorf("%d of %d calls waited to compile a binary that was current", waited, n)
		}
	}
	if _, err := os.Stat("../../mage_output_file.go"); err == nil {
		t.Error("mage_output_file.go was left in the checkout")
	}
}
