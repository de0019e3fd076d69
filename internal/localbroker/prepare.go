package localbroker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sources are the files of the broker that Prepare installs, in the order
// they are hashed.
var Sources = []string{"package.json", "package-lock.json", "server.js"}

// MinNodeMajor is the oldest Node.js major version aedes 1.x runs on.
const MinNodeMajor = 20

// staleInstall is how old an unfinished install directory must be before
// Prepare removes it: old enough that no live install still writes it.
const staleInstall = time.Hour

// DefaultCacheRoot returns the directory Prepare installs into by default:
// mttr-lab under the user's cache directory (~/.cache/mttr-lab on Linux).
func DefaultCacheRoot() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cache directory: %w", err)
	}
	return filepath.Join(dir, "mttr-lab"), nil
}

// SourceDigest hashes the Sources in dir (name, length and content of
// each), so that an install is reused only for exactly the same sources.
func SourceDigest(dir string) (string, error) {
	h := sha256.New()
	for _, name := range Sources {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", fmt.Errorf("broker sources: %w", err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Prepare makes sure the aedes broker in dir (Sources) is installed with
// `npm ci --omit=dev` in a directory under cacheRoot named by the sources'
// digest, and returns that directory, from which Start runs server.js. It
// reuses a complete earlier install without running npm. An install is
// built in a temporary directory and renamed into place when npm
// succeeded, so an interrupted one never counts as complete. npm's output
// goes to progress (nil discards it), after one line that says whether
// Prepare installs or reuses.
func Prepare(ctx context.Context, dir, cacheRoot string, progress io.Writer) (string, error) {
	if progress == nil {
		progress = io.Discard
	}
	if err := checkNode(ctx); err != nil {
		return "", fmt.Errorf("prepare broker: %w", err)
	}
	digest, err := SourceDigest(dir)
	if err != nil {
		return "", fmt.Errorf("prepare broker: %w", err)
	}
	final := filepath.Join(cacheRoot, "aedes-"+digest[:16])
	if installed(final) {
		fmt.Fprintf(progress, "broker: reusing aedes installed in %s\n", final)
		return final, nil
	}
	if err := os.RemoveAll(final); err != nil { // a damaged install
		return "", fmt.Errorf("prepare broker: %w", err)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("prepare broker: npm not found on PATH: install npm (it comes with Node.js %d or newer) and run again: %w", MinNodeMajor, err)
	}
	if err := os.MkdirAll(cacheRoot, 0o755); err != nil {
		return "", fmt.Errorf("prepare broker: %w", err)
	}
	removeStale(cacheRoot)
	tmp, err := os.MkdirTemp(cacheRoot, ".aedes-"+digest[:16]+"-")
	if err != nil {
		return "", fmt.Errorf("prepare broker: %w", err)
	}
	defer os.RemoveAll(tmp) // nothing left once renamed
	for _, name := range Sources {
		if err := copyFile(filepath.Join(dir, name), filepath.Join(tmp, name)); err != nil {
			return "", fmt.Errorf("prepare broker: %w", err)
		}
	}
	fmt.Fprintf(progress, "broker: installing aedes with npm ci into %s\n", final)
	if err := npmCI(ctx, npm, tmp, progress); err != nil {
		return "", fmt.Errorf("prepare broker: %w", err)
	}
	if !installed(tmp) {
		return "", errors.New("prepare broker: npm ci succeeded but installed no node_modules/aedes")
	}
	if err := os.Rename(tmp, final); err != nil {
		if installed(final) { // another process finished the same install first
			return final, nil
		}
		return "", fmt.Errorf("prepare broker: %w", err)
	}
	return final, nil
}

// installed reports whether dir holds a finished install.
func installed(dir string) bool {
	for _, name := range append(Sources[:len(Sources):len(Sources)], "node_modules/aedes/package.json") {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// npmCI runs npm ci in dir in its own process group, so that cancelling
// ctx ends npm and anything it started.
func npmCI(ctx context.Context, npm, dir string, progress io.Writer) error {
	last := &lastLines{n: 5}
	cmd := exec.CommandContext(ctx, npm, "ci", "--omit=dev", "--no-audit", "--no-fund")
	cmd.Dir = dir
	cmd.Stdout = io.MultiWriter(progress, last)
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("npm ci: %w", context.Cause(ctx))
		}
		return fmt.Errorf("npm ci: %w (last output: %s)", err, last)
	}
	return nil
}

// checkNode makes sure a Node.js new enough for aedes is on PATH.
func checkNode(ctx context.Context) error {
	node, err := exec.LookPath("node")
	if err != nil {
		return fmt.Errorf("node not found on PATH: install Node.js %d or newer (with npm), e.g. from https://nodejs.org or your package manager: %w", MinNodeMajor, err)
	}
	out, err := exec.CommandContext(ctx, node, "--version").Output()
	if err != nil {
		return fmt.Errorf("node --version: %w", err)
	}
	v := strings.TrimSpace(string(out))
	major, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
	if n, err := strconv.Atoi(major); err != nil || n < MinNodeMajor {
		return fmt.Errorf("node %s at %s: aedes needs Node.js %d or newer", v, node, MinNodeMajor)
	}
	return nil
}

// removeStale removes unfinished installs left by interrupted runs.
func removeStale(cacheRoot string) {
	entries, err := os.ReadDir(cacheRoot)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), ".aedes-") {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleInstall {
			_ = os.RemoveAll(filepath.Join(cacheRoot, e.Name()))
		}
	}
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o644)
}
