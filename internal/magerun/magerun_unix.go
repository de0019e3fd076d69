//go:build unix

package magerun

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/magefile/mage/mage"

	"github.com/mttrlab/mttr/internal/interrupt"
)

// runTargets builds the magefile under the checkout's lock and replaces
// this process with the binary. It returns only when that could not happen.
func runTargets(inv mage.Invocation) int {
	// One thread from here to exec: the request for a signal when the
	// command's process (go) exits belongs to the thread that makes it, and
	// only the thread that execs lives on, as the targets' process.
	runtime.LockOSThread()
	command := os.Getppid()
	watchCommand()

	// The targets get their signals from `go tool` alone (see the package
	// comment). A session leader already leads its own group.
	_ = syscall.Setpgid(0, 0)

	// A stop signal before the targets run ends the command: at once while
	// it waits for the lock, once mage has cleaned up while it compiles.
	var compiling atomic.Bool
	var stopped atomic.Value // os.Signal
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, stopSignals()...)
	go func() {
		for s := range sigs {
			if !compiling.Load() {
				os.Exit(exitCode(s))
			}
			stopped.CompareAndSwap(nil, s)
		}
	}()
	if os.Getppid() != command { // it exited before the watch began
		return exitCode(syscall.SIGTERM)
	}

	exe, err := binaryPath(inv)
	if err != nil {
		fmt.Fprintln(inv.Stderr, "Error:", err)
		return 1
	}
	build := inv
	build.CompileOut, build.Force, build.HashFast = exe, true, false
	digest, err := buildDigest(inv)
	if err != nil {
		fmt.Fprintln(inv.Stderr, "Error:", err)
		return 1
	}
	// Held open, the binary checked or built is the one run, even if
	// another call rebuilds it (other sources) before the exec.
	bin := current(exe, digest)
	if bin == nil {
		code := serialized(inv, func() int {
			if bin = current(exe, digest); bin != nil { // built meanwhile
				return 0
			}
			compiling.Store(true)
			if code := mage.Invoke(build); code != 0 {
				return code
			}
			if bin, err = os.Open(exe); err != nil {
				fmt.Fprintln(inv.Stderr, "Error:", err)
				return 1
			}
			_ = writeDigest(exe, digest)
			return 0
		})
		if code != 0 {
			return code
		}
	}

	env := append(os.Environ(), interrupt.CommandEnv+"="+strconv.Itoa(command))
	if inv.Verbose {
		env = append(env, "MAGEFILE_VERBOSE=1")
	}
	if inv.Debug {
		env = append(env, "MAGEFILE_DEBUG=1")
	}
	if inv.GoCmd != "" {
		env = append(env, "MAGEFILE_GOCMD="+inv.GoCmd)
	}
	if inv.Timeout > 0 {
		env = append(env, "MAGEFILE_TIMEOUT="+inv.Timeout.String())
	}
	dir := inv.WorkDir
	if dir == "" {
		dir = inv.Dir
	}
	if dir != "" {
		if err := os.Chdir(dir); err != nil {
			fmt.Fprintln(inv.Stderr, "Error:", err)
			return 1
		}
	}
	if s, ok := stopped.Load().(os.Signal); ok {
		return exitCode(s)
	}
	err = syscall.Exec(pinned(bin), append([]string{exe}, inv.Args...), env)
	fmt.Fprintf(inv.Stderr, "Error: run %s: %v\n", exe, err)
	return 1
}

// stopSignals are the signals that stop the command before its targets
// run.
func stopSignals() []os.Signal {
	s := []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}
	if interrupt.ParentDeathSignal > 0 {
		s = append(s, interrupt.ParentDeathSignal)
	}
	return s
}

// exitCode is a shell's status for a command ended by s.
func exitCode(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok && n > 0 {
		return 128 + int(n)
	}
	return 1
}

// binaryPath is where the magefile of inv's checkout is compiled to: one
// binary per checkout, in mage's cache directory.
func binaryPath(inv mage.Invocation) (string, error) {
	dir := inv.Dir
	if dir == "" {
		dir = "."
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("magefile directory %s: %w", dir, err)
	}
	sum := sha256.Sum256([]byte(abs))
	d := filepath.Join(inv.CacheDir, "mttr-"+hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("mage cache: %w", err)
	}
	return filepath.Join(d, "mage"), nil
}

// buildDigest is a digest of everything the targets' binary is built
// from: the Go toolchain and mage's version, the build's environment, and
// every Go source, go.mod and go.sum of the magefile's module (its
// dependencies are fixed by go.sum). A binary built from the same digest
// is current.
func buildDigest(inv mage.Invocation) (string, error) {
	dir := inv.Dir
	if dir == "" {
		dir = "."
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", runtime.Version(), inv.GoCmd, os.Getenv("GOFLAGS"))
	for _, k := range []string{"GOOS", "GOARCH", "CGO_ENABLED", "GOEXPERIMENT", "MAGEFILE_HASHFAST"} {
		fmt.Fprintf(h, "%s=%s\x00", k, os.Getenv(k))
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/magefile/mage" {
				fmt.Fprintf(h, "mage %s\x00", m.Version)
			}
		}
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != dir && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules" || name == "results") {
				return filepath.SkipDir
			}
			return nil
		}
		// mage_output_file.go is mage's own, written and removed by
		// whichever call compiles.
		if (!strings.HasSuffix(name, ".go") && name != "go.mod" && name != "go.sum") || name == "mage_output_file.go" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("mage: digest of the sources: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// current opens the binary exe when it was built from digest; nil when it
// was not, or is missing.
func current(exe, digest string) *os.File {
	if b, err := os.ReadFile(exe + ".digest"); err != nil || string(b) != digest {
		return nil
	}
	bin, err := os.Open(exe)
	if err != nil {
		return nil
	}
	return bin
}

// writeDigest records the digest exe was built from, atomically.
func writeDigest(exe, digest string) error {
	tmp := exe + ".digest.tmp" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, []byte(digest), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, exe+".digest")
}

// serialized runs fn while holding a lock on the magefile directory of
// inv, so that one mage at a time writes mage_output_file.go there and
// compiles, whatever cache directory or path to the checkout each uses.
func serialized(inv mage.Invocation, fn func() int) int {
	dir := inv.Dir
	if dir == "" {
		dir = "."
	}
	f, err := os.Open(dir)
	if err != nil {
		fmt.Fprintln(inv.Stderr, "Error: mage lock:", err)
		return 1
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		fmt.Fprintln(inv.Stderr, "mage: waiting for another mage call in this checkout to compile")
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			fmt.Fprintln(inv.Stderr, "Error: mage lock:", err)
			return 1
		}
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}
