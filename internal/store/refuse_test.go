package store

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRefusedFileLeavesNothing guards that a file refused as a results
// database (not SQLite, or cut short) is left as it was, with no WAL or
// shared-memory file beside it, whether opened to write or to read.
func TestRefusedFileLeavesNothing(t *testing.T) {
	good := filepath.Join(t.TempDir(), "good.db")
	s, err := Open(t.Context(), good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartRun(t.Context(), sampleRun()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	whole, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"not sqlite": []byte("hello, not a database\n"), "cut short": whole[:3000]} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.db")
			if err := os.WriteFile(path, content, 0o644); err != nil {
				t.Fatal(err)
			}
			if s, err := Open(t.Context(), path); err == nil {
				s.Close()
				t.Fatal("Open accepted it")
			}
			if s, err := OpenReadOnly(t.Context(), path); err == nil {
				s.Close()
				t.Fatal("OpenReadOnly accepted it")
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("left beside it: %v", entries)
			}
		})
	}
}

// TestReadOnlyFileRefusedForWriting guards that a results database this
// process cannot write is refused when opened for a run, saying so, and
// not at the run's first row.
func TestReadOnlyFileRefusedForWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if os.Geteuid() == 0 { // root writes through file modes: make it immutable
		if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
			t.Skipf("cannot make a file read-only for root here: %v %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("chattr", "-i", path).Run() })
	} else if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), path)
	if err == nil || !strings.Contains(err.Error(), "ro.db: cannot be written") {
		t.Errorf("Open = %v, want it refused as not writable", err)
	}
}
