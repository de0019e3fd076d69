// Package runnote keeps a note of each run in progress, outside any results
// database: which database it writes, its id there, and the process that
// runs it. A run leaves its note when it starts and takes it back when it
// is finished, so a note that stays behind belongs to a run that was
// killed; a later run, whatever database it uses, finds it here.
package runnote

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// Note is one run's note.
type Note struct {
	DB    string `json:"db"`    // absolute path of its database
	Run   int64  `json:"run"`   // its id there
	Owner string `json:"owner"` // "<machine>:<pid>" of the process running it
}

// Leave writes n into dir; take removes it again.
func Leave(dir string, n Note) (take func(), err error) {
	b, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("run note: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("run note: %w", err)
	}
	name := filepath.Join(dir, n.Owner+"-"+strconv.FormatInt(n.Run, 10)+".json")
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return nil, fmt.Errorf("run note: %w", err)
	}
	return func() { _ = os.Remove(name) }, nil
}

// Found is a note read back.
type Found struct {
	Note
	path string
}

// Take removes the note.
func (f Found) Take() { _ = os.Remove(f.path) }

// List reads the notes in dir. A note that cannot be parsed is removed.
func List(dir string) ([]Found, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("run notes %s: %w", dir, err)
	}
	var out []Found
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue // taken back meanwhile
		}
		f := Found{path: path}
		if json.Unmarshal(b, &f.Note) != nil {
			_ = os.Remove(path)
			continue
		}
		out = append(out, f)
	}
	return out, nil
}
