package lab

import (
	"bytes"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/config"
	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/report"
	"github.com/mttrlab/mttr/internal/store"
)

// TestBedBoundRun guards that a run measures its own test bed in every
// cycle, and that a machine with no capacity to spare is data, not a
// silent distortion: with a busy loop on every core the host is fully
// busy in each cycle's window (every core is kept at 100 %, over the
// bed-bound limit of 90 %), so the cycles are bed-bound, the report warns
// and check calls the verdict inconclusive with its own exit status. The
// same run without the loops measures a host less busy than that (on a
// quiet machine, not bed-bound: the run logs it; the test cannot know what
// else loads the machine it runs on). It is not parallel: the loops would
// bind every test beside it.
func TestBedBoundRun(t *testing.T) {
	requireNode(t)
	certDir, db := t.TempDir(), filepath.Join(t.TempDir(), "mttr.db")
	newRun := func() *Lab {
		cfg := config.Defaults
		cfg.Broker = "process"
		cfg.Fault = "stop"
		cfg.CertDir, cfg.CertDays = certDir, 1
		cfg.Port = dockertest.FreePort(t)
		cfg.BrokerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))
		cfg.DB = db
		cfg.RestartCount = 2
		cfg.KeepRunning = 500 * time.Millisecond
		cfg.KeepDead = time.Second
		cfg.SendInterval = 100 * time.Millisecond
		cfg.MaxReconnectInterval = time.Second
		cfg.ReadyTimeout = 30 * time.Second
		cfg.RecoveryTimeout = 30 * time.Second
		return &Lab{Config: cfg, Out: new(bytes.Buffer), BuildDir: filepath.Join("..", "..", "aedes")}
	}

	_, quiet := runMttr(t, newRun())
	if len(quiet) != 2 {
		t.Fatalf("quiet run: %d rows, want 2", len(quiet))
	}
	for _, r := range quiet {
		b := r.Bed
		if !b.Measured() || b.Cores != runtime.NumCPU() || b.Broker < 0 || b.Tool <= 0 || b.Window < time.Second {
			t.Errorf("quiet cycle %d: bed %+v, want every figure measured over at least keep-dead", r.Cycle, b)
		}
		t.Logf("quiet cycle %d: bed %s; bound: %v", r.Cycle, b, b.Bound(mttr.DefaultBedLimits))
	}

	for range runtime.NumCPU() {
		loop := exec.Command("/bin/sh", "-c", "while :; do :; done")
		loop.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := loop.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(-loop.Process.Pid, syscall.SIGKILL); _ = loop.Wait() })
	}
	l := newRun()
	run, busy := runMttr(t, l)
	if run.Status != store.StatusCompleted || len(busy) != 2 {
		t.Fatalf("busy run %+v with %d rows", run, len(busy))
	}
	for i, r := range busy {
		if busy := r.Bed.HostBusy(); busy < mttr.DefaultBedLimits.HostBusy || busy <= quiet[i].Bed.HostBusy() && busy < 1 {
			t.Errorf("busy cycle %d: host %.0f %% busy with a loop on every core (quiet: %.0f %%; bed %s)",
				r.Cycle, 100*busy, 100*quiet[i].Bed.HostBusy(), r.Bed)
		}
	}
	if out := l.Out.(*bytes.Buffer).String(); !strings.Contains(out, "cycles bed-bound") {
		t.Errorf("the run's summary does not warn:\n%s", out)
	}

	st := readStore(t, db)
	rep, err := report.Build(t.Context(), st, report.Options{Last: 5, Alpha: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := report.Write(&text, rep, "text"); err != nil {
		t.Fatal(err)
	}
	if want := "warning: run " + strconv.FormatInt(run.ID, 10) + ": 2 of 2 cycles bed-bound"; !strings.Contains(text.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, text.String())
	}
	l.Config.Baseline = ""
	var inc InconclusiveError
	if err := l.Check(t.Context()); !errors.As(err, &inc) || inc.ExitStatus() != ExitInconclusive {
		t.Errorf("check = %v, want inconclusive (exit %d)", err, ExitInconclusive)
	}
	if !strings.Contains(l.Out.(*bytes.Buffer).String(), "INCONCLUSIVE  2 of 2 cycles bed-bound") {
		t.Errorf("check printed no inconclusive verdict:\n%s", l.Out.(*bytes.Buffer).String())
	}
}
