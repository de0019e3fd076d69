package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/client"
	"github.com/mttrlab/mttr/internal/config"
	"github.com/mttrlab/mttr/internal/device"
	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/mqttprobe"
	"github.com/mttrlab/mttr/internal/report"
	"github.com/mttrlab/mttr/internal/store"
)

// pythonClient returns the command line that runs testdata/<script> with a
// python3 that has paho-mqtt (see python).
func pythonClient(t *testing.T, script string) string {
	t.Helper()
	py := python(t)
	path, err := filepath.Abs(filepath.Join("testdata", script))
	if err != nil {
		t.Fatal(err)
	}
	return py + " " + path
}

// python returns Debian's python3 with the paho-mqtt package, skipping (or
// failing, when Docker tests are required) when it is missing.
func python(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import paho.mqtt.client").Run() == nil {
			return p
		}
	}
	if dockertest.Required() {
		t.Fatal("MTTR_REQUIRE_DOCKER=1 but no python3 with paho-mqtt (Debian: python3-paho-mqtt)")
	}
	t.Skip("no python3 with paho-mqtt")
	return ""
}

func TestDockerExternalClient(t *testing.T) {
	dockertest.Engine(t)
	clientCmd := pythonClient(t, "paho_client.py")
	base, _ := newLab(t, "localhost")
	build(t, base)

	for _, fault := range []string{"stop", "pause"} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			l := shortRun(t, base, fault)
			l.Config.Client = "external"
			l.Config.ClientCmd = clientCmd
			run, rows := runMttr(t, l)
			var vars map[string]string
			_ = json.Unmarshal([]byte(run.ConfigJSON), &vars)
			if run.Status != store.StatusCompleted || run.Client != "external" || vars["MTTR_CLIENT_CMD"] != l.Config.ClientCmd {
				t.Errorf("run %+v", run)
			}
			if len(rows) != 2 {
				t.Fatalf("%d rows, want 2", len(rows))
			}
			for _, r := range rows {
				if r.Device != "devicemtr" || r.Error != "" || r.Published == 0 || r.LastAckBeforeAt == 0 {
					t.Errorf("cycle %d: %+v", r.Cycle, r)
				}
				checkOrder(t, r)
				switch fault {
				case "stop": // the broker restarted: the client had to connect again
					if r.ReconnectedAt == 0 || r.ReconnectedAt > r.FirstAckAt || r.LostAt == 0 {
						t.Errorf("cycle %d: lost %d reconnected %d first ack %d", r.Cycle, r.LostAt, r.ReconnectedAt, r.FirstAckAt)
					}
				case "pause": // 2 s frozen, keep-alive 15 s: the connection survived
					if r.LostAt != 0 || r.ReconnectedAt != 0 {
						t.Errorf("cycle %d: pause seen as a loss: lost %d reconnected %d", r.Cycle, r.LostAt, r.ReconnectedAt)
					}
				}
			}
			logPath := filepath.Join(filepath.Dir(l.Config.DB), "clients-run-1.log")
			if b, err := os.ReadFile(logPath); err != nil || !strings.Contains(string(b), "devicemtr | devicemtr: publishing to devices/devicemtr/messages/events/") {
				t.Errorf("client log %s: %v\n%s", logPath, err, b)
			}
		})
	}
}

func TestDockerExternalClientDiesTwice(t *testing.T) {
	dockertest.Engine(t)
	base, _ := newLab(t, "localhost")
	build(t, base)
	l := shortRun(t, base, "stop")
	l.Config.Client = "external"
	l.Config.ClientCmd = `echo "cannot reach $MTTR_BROKER_ADDR"; exit 7`
	id, err := l.Mttr(t.Context())
	if err == nil || !strings.Contains(err.Error(), "exit status 7") || !strings.Contains(err.Error(), "cannot reach 127.0.0.1:") {
		t.Fatalf("Mttr with a dying client = %v", err)
	}
	run, _ := readRun(t, l.Config.DB, id)
	if run.Status != store.StatusFailed || !strings.Contains(run.Error, "again after its restart") {
		t.Errorf("run %+v", run)
	}
}

// TestDockerImpatientClient measures a client nobody here wrote that knocks
// every 100 ms while the broker is away and sends its backlog when it is
// back, 10 stop and 10 kill cycles in each network mode, then a pause. It
// checks that the test bed's delay is reported as path, not as recovery:
//
//   - holder (the default): path within one probe interval and a TLS
//     handshake and CONNECT on a loaded machine (the margin below) in
//     every cycle, an order of magnitude under plain Docker's 1 s stall;
//   - plain Docker: recovery stays within the client's own retry period
//     plus a margin even when the path stalls (the stall shows in path);
//   - pause: the client's queued messages reach the broker as it thaws, so
//     recovery ≤ 50 ms;
//   - every cycle: the verifier received every message the broker did.
//
// The pause run's connection string carries a key that must appear in no
// stored or printed output.
func TestDockerImpatientClient(t *testing.T) {
	dockertest.Engine(t)
	clientCmd := pythonClient(t, "aggressive_client.py")
	base, _ := newLab(t, "localhost")
	build(t, base)
	db := filepath.Join(t.TempDir(), "mttr.db")
	const (
		retry       = 100 * time.Millisecond // the client's reconnect period
		retryMargin = 100 * time.Millisecond // its TLS handshake and first PUBLISH, on a loaded machine
		pauseBound  = 50 * time.Millisecond  // a thawed broker takes the queued messages at once
		pathBound   = mqttprobe.ProbeInterval + retryMargin
		secretKey   = "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3Q="
	)
	var runs []int64
	for _, tc := range []struct{ netns, fault string }{
		{"holder", "stop"}, {"holder", "kill"}, {"plain", "stop"}, {"plain", "kill"}, {"holder", "pause"},
	} {
		t.Run(tc.netns+"/"+tc.fault, func(t *testing.T) {
			l := shortRun(t, base, tc.fault)
			l.Config.DB = db
			l.Config.NetNS = tc.netns
			l.Config.RestartCount = 10
			l.Config.KeepRunning = 500 * time.Millisecond
			l.Config.KeepDead = time.Second
			l.Config.Client = "external"
			l.Config.ClientCmd = clientCmd
			if tc.fault == "pause" {
				l.Config.ConnectionString = "HostName=localhost;DeviceId=devicemtr;SharedAccessKey=" + secretKey
				l.Config.ClientCmd = `echo "my connection string: $MTTR_CONNECTION_STRING"; exec ` + l.Config.ClientCmd
			}
			run, rows := runMttr(t, l)
			runs = append(runs, run.ID)
			if run.Status != store.StatusCompleted || run.Broker != "docker" || run.NetNS != tc.netns || len(rows) != 10 {
				t.Fatalf("run %+v with %d rows", run, len(rows))
			}
			var paths, recoveries []time.Duration
			for _, r := range rows {
				checkOrder(t, r)
				rec, recOK := r.Recovery()
				path, pathOK := r.Path()
				if !recOK || !pathOK {
					t.Errorf("cycle %d: recovery %v path %v: missing", r.Cycle, recOK, pathOK)
				}
				paths = append(paths, path)
				recoveries = append(recoveries, rec)
				if r.Error != "" || r.Published == 0 || r.Delivered != r.Published {
					t.Errorf("cycle %d: published %d delivered %d error %q", r.Cycle, r.Published, r.Delivered, r.Error)
				}
				switch {
				case tc.fault == "pause":
					if rec > pauseBound {
						t.Errorf("cycle %d: recovery %v after a pause, want ≤ %v", r.Cycle, rec, pauseBound)
					}
				case rec > retry+retryMargin:
					t.Errorf("cycle %d: recovery %v (path %v), want ≤ %v + %v", r.Cycle, rec, path, retry, retryMargin)
				}
				if tc.netns == "holder" && path > pathBound {
					t.Errorf("cycle %d: path %v with the namespace held, want ≤ %v", r.Cycle, path, pathBound)
				}
			}
			t.Logf("%s %s: recovery per cycle %v, path per cycle %v", tc.netns, tc.fault, recoveries, paths)
		})
	}
	if len(runs) != 5 {
		t.Fatalf("%d runs completed, want 5", len(runs))
	}

	// The key is fingerprinted or masked everywhere it could land.
	st := readStore(t, db)
	clientLog := filepath.Join(filepath.Dir(db), fmt.Sprintf("clients-run-%d.log", runs[len(runs)-1]))
	outputs := map[string][]byte{}
	for _, f := range []string{db, db + "-wal", clientLog} {
		b, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		outputs[f] = b
	}
	if !strings.Contains(string(outputs[clientLog]), "my connection string: HostName=localhost;DeviceId=devicemtr;SharedAccessKey="+client.Masked) {
		t.Error("the client's own printing of its connection string did not reach the log, masked")
	}
	rep, err := report.Build(t.Context(), st, report.Options{Last: 20, Baseline: strconv.FormatInt(runs[0], 10), Alpha: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range config.Formats {
		var b bytes.Buffer
		if err := report.Write(&b, rep, format); err != nil {
			t.Fatal(err)
		}
		outputs["report "+format] = b.Bytes()
	}
	var html bytes.Buffer
	if err := report.WriteHTML(&html, rep); err != nil {
		t.Fatal(err)
	}
	outputs["report html"] = html.Bytes()
	if !strings.Contains(string(outputs["report text"]), "MTTR_CONNECTION_STRING") {
		t.Error("the text report does not show that the connection strings differ")
	}
	for name, b := range outputs {
		for _, secret := range []string{secretKey, "Zm9vYmFy"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s contains the key %s", name, secret)
			}
		}
	}
}

// TestDockerClientIDTaken has another client connect with the run's device
// id the moment the broker listens, the way a client some earlier run left
// running on another machine would: the run must refuse to go on, naming
// the id, instead of letting the two take the connection from each other.
func TestDockerClientIDTaken(t *testing.T) {
	dockertest.Engine(t)
	base, _ := newLab(t, "localhost")
	build(t, base)
	l := shortRun(t, base, "stop")
	l.Config.Client, l.Config.ClientCmd = "external", "sleep 300"
	tlsConf, err := l.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	id, err := device.ParseConnectionString(l.Config.ConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	other, err := device.New(l.deviceConfig(id, id.DeviceID, tlsConf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { // knocks every 2 ms, its own retry policy, until the broker answers
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for other.Connect(ctx) != nil {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()

	runID, err := l.Mttr(t.Context())
	if err == nil || !strings.Contains(err.Error(), "client id devicemtr is already connected to the broker") {
		t.Fatalf("Mttr with the device id taken = %v", err)
	}
	run, _ := readRun(t, l.Config.DB, runID)
	if run.Status != store.StatusFailed {
		t.Errorf("run %+v", run)
	}
}
