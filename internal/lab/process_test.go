package lab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/config"
	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/interrupt"
	"github.com/mttrlab/mttr/internal/needs"
	"github.com/mttrlab/mttr/internal/pgtest"
	"github.com/mttrlab/mttr/internal/store"
)

// requireNode skips the test in -short mode or when node or npm is
// missing, unless MTTR_REQUIRE_NODE=1 makes that a failure.
func requireNode(t *testing.T) {
	t.Helper()
	needs.Node.Short(t)
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			needs.Node.Missing(t, err.Error())
		}
	}
}

// TestProcessBroker runs the experiment against the broker as a local
// process, with every fault it supports, while DOCKER_HOST points at an
// engine that does not exist, and checks that no broker process is left.
func TestProcessBroker(t *testing.T) {
	requireNode(t)
	if !inOwnProcess(t, false) {
		return
	}
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-engine.sock"))
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // install the broker afresh, outside the user's cache
	certDir := t.TempDir()
	for _, fault := range config.ProcessFaults {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			cfg := config.Defaults
			cfg.Broker = "process"
			cfg.Fault = fault
			cfg.CertDir, cfg.CertDays = certDir, 1
			cfg.Port = dockertest.FreePort(t)
			cfg.BrokerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))
			cfg.DB = filepath.Join(t.TempDir(), "mttr.db")
			cfg.RestartCount = 2
			cfg.KeepRunning = 500 * time.Millisecond
			cfg.KeepDead = time.Second
			cfg.SendInterval = 100 * time.Millisecond
			cfg.MaxReconnectInterval = time.Second
			cfg.ReadyTimeout = 30 * time.Second
			cfg.RecoveryTimeout = 30 * time.Second
			var out bytes.Buffer
			l := &Lab{Config: cfg, Out: &out, BuildDir: filepath.Join("..", "..", "aedes")}
			run, rows := runMttr(t, l)
			if run.Status != store.StatusCompleted || run.Broker != "process" || run.NetNS != "" || run.EngineVersion != "" || len(rows) != 2 {
				t.Fatalf("run %+v with %d rows\n%s", run, len(rows), out.String())
			}
			for _, r := range rows {
				checkOrder(t, r)
				if r.Error != "" || r.Published == 0 {
					t.Errorf("cycle %d: %+v", r.Cycle, r)
				}
				checkDelivered(t, r, fault)
				if fault != "pause" && (r.ListeningAt == 0 || r.LostAt == 0 || r.ReconnectedAt == 0) {
					t.Errorf("cycle %d after %s: listening %d lost %d reconnected %d", r.Cycle, fault, r.ListeningAt, r.LostAt, r.ReconnectedAt)
				}
			}
			if pids := brokerProcesses(t, cfg.Port); len(pids) > 0 {
				t.Errorf("broker processes left on port %d: %v", cfg.Port, pids)
			}
		})
	}
}

// brokerProcesses returns the processes started with MQTT_PORT=port.
func brokerProcesses(t *testing.T, port int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	want := []byte("MQTT_PORT=" + strconv.Itoa(port) + "\x00")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && bytes.Contains(env, want) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestMttrPostgres makes a short run with `mage mttr`, then two at once,
// each against a broker of its own as a local process, stored in one
// PostgreSQL database (MTTR_TEST_POSTGRES): they complete with every cycle
// stored, each under its own id and this machine's name, and the report
// and the check read them.
func TestMttrPostgres(t *testing.T) {
	requireNode(t)
	if !inOwnProcess(t, false) {
		return
	}
	ref := pgtest.URL(t)
	// Go's build cache follows XDG_CACHE_HOME unless GOCACHE says where:
	// mage must not build everything afresh.
	gocache, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	certDir := t.TempDir()
	lab := func() (*Lab, *bytes.Buffer) {
		cfg := config.Defaults
		cfg.Broker, cfg.Fault = "process", "stop"
		cfg.CertDir, cfg.CertDays = certDir, 1
		cfg.Port = dockertest.FreePort(t)
		cfg.BrokerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))
		cfg.DB = ref
		cfg.HTML = filepath.Join(t.TempDir(), "report.html")
		cfg.RestartCount = 2
		cfg.KeepRunning, cfg.KeepDead = 500*time.Millisecond, time.Second
		cfg.SendInterval, cfg.MaxReconnectInterval = 100*time.Millisecond, time.Second
		cfg.ReadyTimeout, cfg.RecoveryTimeout = 30*time.Second, 30*time.Second
		out := new(bytes.Buffer)
		return &Lab{Config: cfg, Out: out, BuildDir: filepath.Join("..", "..", "aedes")}, out
	}
	// `mage mttr` first: it also installs the broker's sources once, before
	// the two below start.
	first, out := lab()
	if testing.Short() {
		runMttr(t, first)
	} else {
		c := first.Config
		mage := exec.CommandContext(t.Context(), "go", "tool", "mage", "mttr")
		mage.Dir = "../.."
		mage.Env = append(os.Environ(), "GOCACHE="+strings.TrimSpace(string(gocache)), "MTTR_BROKER=process", "MTTR_FAULT=stop", "MTTR_CERT_DIR="+c.CertDir, "MTTR_CERT_DAYS=1",
			"MTTR_PORT="+strconv.Itoa(c.Port), "MTTR_DB="+c.DB, "MTTR_HTML="+c.HTML, "MTTR_RESTART_COUNT=2", "MTTR_KEEP_RUNNING=500ms",
			"MTTR_KEEP_DEAD=1s", "MTTR_SEND_INTERVAL=100ms", "MTTR_MAX_RECONNECT_INTERVAL=1s")
		got, err := mage.CombinedOutput()
		if err != nil || !strings.Contains(string(got), "stored in postgres://") {
			t.Fatalf("mage mttr: %v\n%s", err, got)
		}
	}
	a, outA := lab()
	b, outB := lab()
	type result struct {
		id  int64
		err error
	}
	done := make(chan result, 2)
	for _, l := range []*Lab{a, b} {
		go func() {
			id, err := l.Mttr(t.Context())
			done <- result{id, err}
		}()
	}
	ids := map[int64]bool{}
	for range 2 {
		r := <-done
		if r.err != nil {
			t.Fatalf("a concurrent run: %v\n%s\n%s", r.err, outA, outB)
		}
		ids[r.id] = true
	}
	machine, _ := os.Hostname()
	for id := range ids {
		run, rows := readRun(t, ref, id)
		if run.Status != store.StatusCompleted || len(rows) != 2 || run.Machine != machine {
			t.Errorf("run %d: %s on %q with %d rows", id, run.Status, run.Machine, len(rows))
		}
	}
	if len(ids) != 2 {
		t.Errorf("run ids %v", ids)
	}
	first.Out = out
	if err := first.Report(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := first.Check(t.Context()); err != nil && !strings.Contains(err.Error(), "check:") {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Runs in postgres://") {
		t.Errorf("the report does not say what it read:\n%s", out.String())
	}
}

// TestStoreGoesAway kills the PostgreSQL server of a run after the first
// of its three cycles, as documented (README "Results database"): the run
// goes on and keeps its cycles. Brought back after the second, the server
// gets them all; left down, they stay in the rescue file, which mage
// import loads once the server is back; and so does the second when the
// run is interrupted (Ctrl-C) after it, the server still down. No
// finished cycle is lost.
func TestStoreGoesAway(t *testing.T) {
	requireNode(t)
	if !inOwnProcess(t, false) {
		return
	}
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	certDir := t.TempDir()
	for _, tc := range []struct {
		name        string
		back        bool // the server comes back while the run goes on
		interrupted bool // the run is interrupted while the server is down
	}{{name: "back", back: true}, {name: "gone"}, {name: "interrupted", interrupted: true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := pgtest.StartServer(t)
			cfg := config.Defaults
			cfg.Broker, cfg.Fault = "process", "stop"
			cfg.CertDir, cfg.CertDays = certDir, 1
			cfg.Port = dockertest.FreePort(t)
			cfg.BrokerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))
			cfg.DB = srv.URL
			cfg.HTML = filepath.Join(t.TempDir(), "report.html")
			cfg.RestartCount = 3
			cfg.KeepRunning, cfg.KeepDead = 500*time.Millisecond, time.Second
			cfg.SendInterval, cfg.MaxReconnectInterval = 100*time.Millisecond, time.Second
			cfg.ReadyTimeout, cfg.RecoveryTimeout = 30*time.Second, 30*time.Second
			cfg.StoreGrace = 2 * time.Second
			out := &lineWatch{}
			first, second := out.on("cycle 1/3"), out.on("cycle 2/3")
			l := &Lab{Config: cfg, Out: out, BuildDir: filepath.Join("..", "..", "aedes")}
			type result struct {
				id  int64
				err error
			}
			ctx, stop := context.WithCancelCause(t.Context())
			defer stop(nil)
			done := make(chan result, 1)
			go func() {
				id, err := l.Mttr(ctx)
				done <- result{id, err}
			}()
			// await returns once out has the line ready closes on; a run that
			// ended before it fails the test.
			await := func(ready <-chan struct{}) {
				t.Helper()
				select {
				case <-ready:
				case res := <-done:
					t.Fatalf("run %d ended early: %v\n%s", res.id, res.err, out.String())
				}
			}
			await(first)
			srv.Stop(t)
			await(second)
			switch {
			case tc.back:
				srv.Start(t)
			case tc.interrupted:
				stop(&interrupt.Stopped{Reason: "SIGINT"})
			}
			res := <-done
			text := out.String()
			rescues, _ := filepath.Glob(filepath.Join(filepath.Dir(cfg.HTML), fmt.Sprintf("unsaved-run-%d-*.db", res.id)))
			wantStatus, wantCycles := store.StatusCompleted, 3
			if tc.back {
				if res.err != nil {
					t.Fatalf("run: %v\n%s", res.err, text)
				}
				for _, want := range []string{"refused cycle", "took the waiting cycles again", "has every cycle: removed the rescue file"} {
					if !strings.Contains(text, want) {
						t.Errorf("output lacks %q:\n%s", want, text)
					}
				}
				if len(rescues) != 0 {
					t.Errorf("rescue files left: %v", rescues)
				}
			} else {
				if len(rescues) != 1 {
					t.Fatalf("rescue files %v, want one; run: %v\n%s", rescues, res.err, text)
				}
				rescue := rescues[0]
				if res.err == nil || !strings.Contains(res.err.Error(), rescue) || !strings.Contains(res.err.Error(), "mage import") {
					t.Fatalf("run with its store gone: %v\n%s", res.err, text)
				}
				if tc.interrupted {
					// The interrupt lands in cycle 3's up time, or (on a slow
					// machine) after its fault began: cut short, then it does
					// not count, but its rows wait with cycle 2's.
					if !strings.Contains(res.err.Error(), "interrupted (SIGINT): 2 of 3 cycles completed, 1 cut short") || !strings.Contains(res.err.Error(), "of its cycles at the interrupt") {
						t.Errorf("interrupted run: %v", res.err)
					}
					wantStatus, wantCycles = store.StatusInterrupted, 2
				}
				srv.Start(t)
				imp := &Lab{Config: cfg, Out: new(bytes.Buffer)}
				if err := imp.Import(t.Context(), rescue); err != nil {
					t.Fatal(err)
				}
			}
			run, rows := readRun(t, srv.URL, res.id)
			finished := 0
			for _, c := range rows {
				if !c.Counts() {
					continue // the cycle the interrupt cut short
				}
				finished++
				if _, ok := c.Recovery(); !ok {
					t.Errorf("cycle %d: no recovery", c.Cycle)
				}
			}
			if run.Status != wantStatus || finished != wantCycles || (!tc.interrupted && len(rows) != wantCycles) {
				t.Errorf("run %s with %d cycles, %d finished, want %s with %d", run.Status, len(rows), finished, wantStatus, wantCycles)
			}
		})
	}
}
