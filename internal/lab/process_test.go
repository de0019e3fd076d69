package lab

import (
	"bytes"
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
	"github.com/mttrlab/mttr/internal/pgtest"
	"github.com/mttrlab/mttr/internal/store"
)

// requireNode skips the test when node or npm is missing, unless
// MTTR_REQUIRE_NODE=1 makes that a failure.
func requireNode(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("MTTR_REQUIRE_NODE") == "1" {
				t.Fatalf("MTTR_REQUIRE_NODE=1 but: %v", err)
			}
			t.Skipf("no %s: %v", tool, err)
		}
	}
}

// TestProcessBroker runs the experiment against the broker as a local
// process, with every fault it supports, while DOCKER_HOST points at an
// engine that does not exist, and checks that no broker process is left.
func TestProcessBroker(t *testing.T) {
	requireNode(t)
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "no-engine.sock"))
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // install the broker afresh, outside the user's cache
	certDir := t.TempDir()
	for _, fault := range config.ProcessFaults {
		t.Run(fault, func(t *testing.T) {
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
				if r.Error != "" || r.Published == 0 || r.Delivered != r.Published || r.Lost != 0 {
					t.Errorf("cycle %d: %+v", r.Cycle, r)
				}
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

// TestMttrPostgres makes one short run, against the broker as a local
// process, stored in PostgreSQL (MTTR_TEST_POSTGRES): every cycle is
// there, and the report and the check read it.
func TestMttrPostgres(t *testing.T) {
	requireNode(t)
	ref := pgtest.URL(t)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	cfg := config.Defaults
	cfg.Broker, cfg.Fault = "process", "stop"
	cfg.CertDir, cfg.CertDays = t.TempDir(), 1
	cfg.Port = dockertest.FreePort(t)
	cfg.BrokerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))
	cfg.DB = ref
	cfg.HTML = filepath.Join(t.TempDir(), "report.html")
	cfg.RestartCount = 2
	cfg.KeepRunning, cfg.KeepDead = 500*time.Millisecond, time.Second
	cfg.SendInterval, cfg.MaxReconnectInterval = 100*time.Millisecond, time.Second
	cfg.ReadyTimeout, cfg.RecoveryTimeout = 30*time.Second, 30*time.Second
	var out bytes.Buffer
	l := &Lab{Config: cfg, Out: &out, BuildDir: filepath.Join("..", "..", "aedes")}
	run, rows := runMttr(t, l)
	if run.Status != store.StatusCompleted || len(rows) != 2 {
		t.Fatalf("run %+v with %d rows\n%s", run, len(rows), out.String())
	}
	for _, c := range rows {
		if _, ok := c.Recovery(); !ok {
			t.Errorf("cycle %d: no recovery: %+v", c.Cycle, c)
		}
	}
	l.Out = &out
	if err := l.Report(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := l.Check(t.Context()); err != nil && !strings.Contains(err.Error(), "check:") {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "stored in postgres://") {
		t.Errorf("the run does not say where it was stored:\n%s", out.String())
	}
}
