package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/certs"
	"github.com/mttrlab/mttr/internal/config"
	"github.com/mttrlab/mttr/internal/device"
	"github.com/mttrlab/mttr/internal/host"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/store"
)

// TestCertOnceForRunsAtOnce starts eight runs' certificate step at once
// with no certificate yet: one pair is made, and every run trusts the
// pair on disk (TestStoreGoesAway's runs, sharing a certificate directory,
// once trusted a certificate the broker did not serve).
func TestCertOnceForRunsAtOnce(t *testing.T) {
	cfg := config.Defaults
	cfg.Host, cfg.CertDir, cfg.CertDays = "localhost", t.TempDir(), 1
	var wg sync.WaitGroup
	fps := make([]string, 8)
	for i := range fps {
		wg.Go(func() {
			l := &Lab{Config: cfg, Out: io.Discard}
			hc, err := l.cert(t.Context(), true)
			if err != nil {
				t.Error(err)
				return
			}
			fps[i] = hc.fp
		})
	}
	wg.Wait()
	_, onDisk, err := certs.Load(certs.For(cfg.CertDir, cfg.Host).CertPath)
	if err != nil {
		t.Fatal(err)
	}
	for i, fp := range fps {
		if fp != onDisk {
			t.Errorf("run %d trusts %s; the pair on disk is %s", i, fp, onDisk)
		}
	}
}

func TestImageCurrent(t *testing.T) {
	img := broker.Image{Host: "localhost", Fingerprint: "AA", Source: "s1"}
	tests := []struct {
		host, fp, source string
		certOK, sourceOK bool
	}{
		{"localhost", "AA", "s1", true, true},
		{"localhost", "BB", "s1", false, true},
		{"alohomora.net", "AA", "s1", false, true},
		{"localhost", "AA", "s2", true, false},
	}
	for _, tt := range tests {
		c, s := imageCurrent(img, tt.host, tt.fp, tt.source)
		if c != tt.certOK || s != tt.sourceOK {
			t.Errorf("imageCurrent(%s, %s, %s) = %v, %v; want %v, %v", tt.host, tt.fp, tt.source, c, s, tt.certOK, tt.sourceOK)
		}
	}
}

// TestClientEnv pins the contract an external client codes against.
func TestClientEnv(t *testing.T) {
	cfg := config.Defaults
	cfg.Host = "alohomora.net"
	cfg.CertDir = "results/certs"
	cfg.BrokerAddr = "127.0.0.1:18883"
	l := &Lab{Config: cfg}
	id := device.Identity{HostName: "alohomora.net", DeviceID: "devicemtr", SharedAccessKey: "Zm9vYmFy"}
	env, err := l.clientEnv(7, id, "devicemtr-2")
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := filepath.Abs("results/certs/alohomora.net/cert.pem")
	want := []string{
		"MTTR_BROKER_HOST=alohomora.net",
		"MTTR_BROKER_PORT=18883",
		"MTTR_BROKER_ADDR=127.0.0.1:18883",
		"MTTR_BROKER_DIAL_HOST=127.0.0.1",
		"MTTR_CA_FILE=" + ca,
		"MTTR_DEVICE_ID=devicemtr-2",
		"MTTR_CONNECTION_STRING=HostName=alohomora.net;DeviceId=devicemtr-2;SharedAccessKey=Zm9vYmFy",
		"MTTR_KEEP_ALIVE_SECONDS=15",
		"MTTR_TOPIC=devices/devicemtr-2/messages/events/",
		"MTTR_C2D_TOPIC=devices/devicemtr-2/messages/devicebound/#",
		"MTTR_LAB_OWNER=" + owner(),
		"MTTR_LAB_RUN=7",
	}
	if !slices.Equal(env, want) {
		t.Errorf("clientEnv =\n%q\nwant\n%q", env, want)
	}
	l.Config.BrokerAddr = "no-port"
	if _, err := l.clientEnv(7, id, "d"); err == nil {
		t.Error("clientEnv accepted a broker address without a port")
	}
}

// TestToolVersion runs in a git checkout (go test does not stamp VCS
// information), so the revision comes from git.
func TestToolVersion(t *testing.T) {
	if exec.Command("git", "rev-parse", "HEAD").Run() != nil {
		t.Skip("not in a git checkout")
	}
	v := toolVersion(t.Context())
	if !regexp.MustCompile(`^[0-9a-f]{40}(-dirty)?$`).MatchString(v) {
		t.Errorf("toolVersion = %q, want a 40-hex revision", v)
	}
}

// TestBrokerLinesKeepsSameMillisecond feeds lines the engine read late, so
// that they carry the broker's own, equal, millisecond, and a line seen
// again after following the log anew: every event arrives once.
func TestBrokerLinesKeepsSameMillisecond(t *testing.T) {
	var got []brokerlog.Event
	lines, last := brokerLines(broker.Clock{Local: true}, func(e brokerlog.Event) { got = append(got, e) })
	in := `2026-11-26T17:06:18.130000001Z {"ts":1795712778123,"event":"disconnect","clientId":"d"}
2026-11-26T17:06:18.130000002Z {"ts":1795712778123,"event":"connect","clientId":"d"}
2026-11-26T17:06:18.130000003Z {"ts":1795712778123,"event":"publish","clientId":"d","qos":1}
2026-11-26T17:06:18.130000002Z {"ts":1795712778123,"event":"connect","clientId":"d"}
`
	if _, err := lines.Write([]byte(in)); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Kind != brokerlog.Disconnect || got[2].Kind != brokerlog.Publish {
		t.Errorf("events %+v, want disconnect, connect, publish once each", got)
	}
	if want := time.Date(2026, 11, 26, 17, 6, 18, 130000003, time.UTC); !last().Equal(want) {
		t.Errorf("last = %v, want %v", last(), want)
	}
}

func TestNotReadySaysInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := notReady(ctx, time.Minute, context.Canceled); !errors.Is(err, mttr.ErrInterrupted) || strings.Contains(err.Error(), "MTTR_READY_TIMEOUT") {
		t.Errorf("interrupted start-up = %v", err)
	}
	if err := notReady(t.Context(), time.Minute, context.DeadlineExceeded); errors.Is(err, mttr.ErrInterrupted) || !strings.Contains(err.Error(), "not ready within 1m0s (MTTR_READY_TIMEOUT)") {
		t.Errorf("timed-out start-up = %v", err)
	}
}

func TestOwnerGone(t *testing.T) {
	machine, _ := os.Hostname()
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		label string
		pid   int
		gone  bool
	}{
		{machine + ":" + strconv.Itoa(os.Getpid()), os.Getpid(), false},
		{machine + ":" + strconv.Itoa(gone.Process.Pid), gone.Process.Pid, true},
		{"elsewhere:1", 0, false}, // another machine's process cannot be looked at
		{"", 0, false},
		{machine + ":x", 0, false},
	} {
		if pid, g := ownerGone(tt.label); pid != tt.pid || g != tt.gone {
			t.Errorf("ownerGone(%q) = %d, %v; want %d, %v", tt.label, pid, g, tt.pid, tt.gone)
		}
	}
}

// TestFleetFits refuses fleets beyond each of the machine's limits, naming
// MTTR_DEVICES and the limit.
func TestFleetFits(t *testing.T) {
	m := host.Limits{Files: 20000, Ports: 28232, Available: 24 << 30}
	for _, tt := range []struct {
		devices  int
		external bool
		m        host.Limits
		want     string // "" for none
	}{
		{10000, false, m, ""},
		{19744, false, host.Limits{Files: 20000, Ports: 28232, Available: 24 << 30}, ""},
		{19745, false, m, "MTTR_DEVICES=19745: this machine can run at most 19744: each device needs an open file, and the limit is 20000 (ulimit -Hn)"},
		{1000000, false, m, "at most 19744"},
		{20000, false, host.Limits{Files: 1 << 20, Ports: 20256}, ""},
		{20001, false, host.Limits{Files: 1 << 20, Ports: 20256}, "MTTR_DEVICES=20001: this machine can run at most 20000: each device needs a local port toward the broker, and the range has 20256"},
		{20001, false, host.Limits{Files: 1 << 20, Available: 1 << 30}, "each device takes about 140 KiB of memory, and 1.0 GiB is available"},
		{20001, true, host.Limits{Files: 1 << 20, Available: 1 << 30}, ""}, // an external client's memory is its own
		{1000000, false, host.Limits{}, ""}, // nothing known: nothing refused
	} {
		err := fleetFits(tt.devices, tt.external, tt.m)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("fleetFits(%d, %v) = %v", tt.devices, tt.m, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n")):
			t.Errorf("fleetFits(%d, %v) = %v, want one line with %q", tt.devices, tt.m, err, tt.want)
		}
	}
}

// TestMttrRefusesHugeFleet refuses a million devices before it writes
// anything: no database.
func TestMttrRefusesHugeFleet(t *testing.T) {
	cfg := config.Defaults
	cfg.Devices = 1_000_000
	cfg.DB = filepath.Join(t.TempDir(), "mttr.db")
	var out strings.Builder
	l := &Lab{Config: cfg, Out: &out}
	_, err := l.Mttr(t.Context())
	if err == nil || !strings.HasPrefix(err.Error(), "MTTR_DEVICES=1000000: this machine can run at most ") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Mttr = %v", err)
	}
	if _, err := os.Stat(cfg.DB); !os.IsNotExist(err) {
		t.Errorf("database written: %v", err)
	}
	if out.Len() > 0 {
		t.Errorf("printed %q", out.String())
	}
}

// deadPID returns the id of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// TestAbandonNotedRuns leaves notes of two runs in another database, one
// whose process is gone and one whose process (this one) lives: a run on a
// different database marks only the first abandoned and takes only its
// note back. Runs killed while later runs used other databases used to
// stay "running".
func TestAbandonNotedRuns(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	machine, _ := os.Hostname()
	other := filepath.Join(t.TempDir(), "other.db")
	db, err := store.Open(t.Context(), other)
	if err != nil {
		t.Fatal(err)
	}
	dead := deadPID(t)
	var ids [2]int64
	for i, pid := range []int{dead, os.Getpid()} {
		ids[i], err = db.StartRun(t.Context(), store.Run{StartedAt: time.Now(), Fault: "stop", Devices: 1, CyclesPlanned: 1, ConfigJSON: "{}", Machine: machine, PID: pid})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := noteRun(other, ids[i], machine+":"+strconv.Itoa(pid)); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	var out strings.Builder
	l := &Lab{Config: config.Defaults, Out: &out}
	if err := l.abandonNoted(t.Context(), filepath.Join(t.TempDir(), "mttr.db")); err != nil {
		t.Fatal(err)
	}
	db, err = store.OpenReadOnly(t.Context(), other)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	runs, err := db.Runs(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	status := map[int64]string{}
	for _, r := range runs {
		status[r.ID] = r.Status
	}
	if status[ids[0]] != store.StatusAbandoned || status[ids[1]] != store.StatusRunning {
		t.Errorf("statuses %v: want run %d abandoned, run %d running", status, ids[0], ids[1])
	}
	if want := fmt.Sprintf("marked run %d of %s abandoned: the process running it (%s:%d) is gone", ids[0], other, machine, dead); !strings.Contains(out.String(), want) {
		t.Errorf("output %q lacks %q", out.String(), want)
	}
	dir, _ := notesDir()
	notes, _ := os.ReadDir(dir)
	if len(notes) != 1 || !strings.HasPrefix(notes[0].Name(), machine+":"+strconv.Itoa(os.Getpid())) {
		t.Errorf("notes left: %v, want the live run's only", notes)
	}
}

// lineWatch keeps what is written to it and closes, for each string
// registered with on, its channel once the output contains that string.
type lineWatch struct {
	mu    sync.Mutex
	b     strings.Builder
	waits map[string]chan struct{}
}

// on returns a channel closed once the output contains s.
func (w *lineWatch) on(s string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.waits == nil {
		w.waits = map[string]chan struct{}{}
	}
	ch, ok := w.waits[s]
	if !ok {
		ch = make(chan struct{})
		w.waits[s] = ch
		w.check()
	}
	return ch
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	w.check()
	return len(p), nil
}

// check closes the channels of strings the output now contains; w.mu is
// held.
func (w *lineWatch) check() {
	for s, ch := range w.waits {
		if ch != nil && strings.Contains(w.b.String(), s) {
			close(ch)
			w.waits[s] = nil
		}
	}
}

func (w *lineWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// readStore opens the results database at path read-only; it closes at
// the test's end.
func readStore(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.OpenReadOnly(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
