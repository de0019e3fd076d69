// Command gotest is go test that says when a run was partial. It runs
// `go test` with its own arguments, its output and exit status passed
// through unchanged, and when tests were skipped for want of Docker,
// PostgreSQL, Node, Python or a browser (package needs), or left out by
// -short, it ends with one line that names them, so that a green run on a
// laptop cannot be taken for a full one:
//
//	go run ./cmd/gotest -p 1 -timeout 20m ./...
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/mttrlab/mttr/internal/needs"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run runs go test with args and returns its exit status.
func run(args []string, stdout, stderr io.Writer) int {
	log, err := os.CreateTemp("", "mttr-skipped-")
	if err != nil {
		fmt.Fprintln(stderr, "gotest:", err)
		return 2
	}
	log.Close()
	defer os.Remove(log.Name())

	cmd := exec.Command("go", append([]string{"test"}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.Env = append(os.Environ(), needs.LogEnv+"="+log.Name())
	// A stop request is go test's to handle: it is passed on, and this
	// process waits for go test to end, so that the line comes all the same.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(stop)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "gotest:", err)
		return 2
	}
	go func() {
		for sig := range stop {
			_ = cmd.Process.Signal(sig)
		}
	}()
	code := 0
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			fmt.Fprintln(stderr, "gotest:", err)
			return 2
		}
		if code = exit.ExitCode(); code < 0 { // killed by a signal
			code = 1
		}
	}
	b, err := os.ReadFile(log.Name())
	if err != nil {
		fmt.Fprintln(stderr, "gotest:", err)
		return max(code, 1)
	}
	if line := needs.Summary(string(b)); line != "" {
		fmt.Fprintln(stdout, line)
	}
	return code
}
