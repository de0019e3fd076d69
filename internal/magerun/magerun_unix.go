//go:build unix

package magerun

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"

	"github.com/magefile/mage/mage"
)

// runTargets builds the magefile under the checkout's lock and replaces
// this process with the binary. It returns only when that could not happen.
func runTargets(inv mage.Invocation) int {
	// The targets get their signals from `go tool` alone (see the package
	// comment). A session leader already leads its own group.
	_ = syscall.Setpgid(0, 0)

	// A stop signal before the targets run ends the command: at once while
	// it waits for the lock, once mage has cleaned up while it compiles.
	var compiling atomic.Bool
	var stopped atomic.Value // os.Signal
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		for s := range sigs {
			if !compiling.Load() {
				os.Exit(exitCode(s))
			}
			stopped.CompareAndSwap(nil, s)
		}
	}()

	exe, err := binaryPath(inv)
	if err != nil {
		fmt.Fprintln(inv.Stderr, "Error:", err)
		return 1
	}
	build := inv
	// Compile only, always (go build leaves an up-to-date binary alone and
	// replaces a stale one by renaming, never under a running process).
	build.CompileOut, build.Force, build.HashFast = exe, true, false
	code := serialized(inv, func() int {
		compiling.Store(true)
		return mage.Invoke(build)
	})
	if code != 0 {
		return code
	}
	if s, ok := stopped.Load().(os.Signal); ok {
		return exitCode(s)
	}

	env := os.Environ()
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
	err = syscall.Exec(exe, append([]string{exe}, inv.Args...), env)
	fmt.Fprintf(inv.Stderr, "Error: run %s: %v\n", exe, err)
	return 1
}

// exitCode is a shell's status for a command ended by s.
func exitCode(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 1
}

// checkoutDir is mage's cache directory for the magefiles of inv, one per
// checkout: its compiled binary and its lock.
func checkoutDir(inv mage.Invocation) (string, error) {
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
	return d, nil
}

func binaryPath(inv mage.Invocation) (string, error) {
	d, err := checkoutDir(inv)
	return filepath.Join(d, "mage"), err
}

// serialized runs fn while holding the checkout's lock, so that one mage at
// a time writes mage_output_file.go there and compiles.
func serialized(inv mage.Invocation, fn func() int) int {
	d, err := checkoutDir(inv)
	if err != nil {
		fmt.Fprintln(inv.Stderr, "Error:", err)
		return 1
	}
	f, err := os.OpenFile(filepath.Join(d, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		fmt.Fprintln(inv.Stderr, "Error: mage lock:", err)
		return 1
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		fmt.Fprintln(inv.Stderr, "Error: mage lock:", err)
		return 1
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}
