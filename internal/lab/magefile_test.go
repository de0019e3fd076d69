package lab

import (
	"os/exec"
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
		"mttr": "runs", "report": "prints", "compare": "compares", "check": "fails",
	} {
		if !strings.Contains(string(out), "  "+target+" ") || !strings.Contains(string(out), " "+verb+" ") {
			t.Errorf("mage -l lacks %q with %q:\n%s", target, verb, out)
		}
	}
}
