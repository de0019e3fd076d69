package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	"github.com/mttrlab/mttr/internal/needs"
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
	needs.Python.Short(t)
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import paho.mqtt.client").Run() == nil {
			return p
		}
	}
	needs.Python.Missing(t, "no python3 with paho-mqtt (Debian: python3-paho-mqtt)")
	return ""
}

func TestDockerExternalClient(t *testing.T) {
	t.Parallel()
	dockertest.Engine(t)
	clientCmd := pythonClient(t, "paho_client.py")
	base, _ := sharedLab(t)

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
			logPath := clientLog(l.Config.DB, l.Config.HTML, 1)
			if b, err := os.ReadFile(logPath); err != nil || !strings.Contains(string(b), "devicemtr | devicemtr: publishing to devices/devicemtr/messages/events/") {
				t.Errorf("client log %s: %v\n%s", logPath, err, b)
			}
		})
	}
}

func TestDockerExternalClientDiesTwice(t *testing.T) {
	t.Parallel()
	dockertest.Engine(t)
	base, _ := sharedLab(t)
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
// back, through stop and kill cycles in each network mode, and a pause,
// one run at a time. It is not parallel: its bounds assume a core to
// spare, which other tests restarting brokers beside it would take. It
// checks that the test bed's delay is reported as path, not as recovery.
// The delay that must not show in recovery is plain Docker's stall:
// docker-proxy's SYN to a container whose address is not up yet,
// retransmitted after Linux's 1 s. Every bound leaves room for a busy
// machine (busyMargin) and stays below that second:
//
//   - recovery ≤ the client's retry period + busyMargin in every stop and
//     kill cycle, in either mode, even when the path stalls (the stall
//     shows in path);
//   - holder (the default): path ≤ one probe interval + busyMargin: no
//     stall to show;
//   - pause: the client's messages, queued in its connection, are the
//     first thing the thawed broker takes, so ready_at is their PUBLISH
//     and recovery ≤ pauseBound;
//   - every cycle: the verifier received every message the broker did,
//     but one it took in the instant it was stopped or killed (see
//     checkDelivered).
//
// How close path and recovery come to the bed's floor on a quiet machine
// is measured by BenchmarkDockerRestartPath (internal/broker). The pause
// run's connection string carries a key that must appear in no stored or
// printed output.
func TestDockerImpatientClient(t *testing.T) {
	dockertest.Engine(t)
	clientCmd := pythonClient(t, "aggressive_client.py")
	base, _ := sharedLab(t)
	db := filepath.Join(t.TempDir(), "mttr.db")
	const (
		retry = 100 * time.Millisecond // the client's reconnect period
		// busyMargin is what the client's failed attempt and its next
		// connection (TCP through docker-proxy, TLS handshake, CONNECT,
		// PUBLISH) may add on a machine where another process uses a core:
		// with a busy loop on one core, recoveries of 80 plain stop cycles
		// reached 301 ms; CI, with a poller taking half a core, 421 ms.
		// retry + busyMargin is half the 1 s stall the test guards against.
		busyMargin = 400 * time.Millisecond
		// pauseBound is the broker's millisecond stamps and the turns of
		// its event loop from reading the client's queued PUBLISH to
		// logging it; our probe, a whole handshake begun only once the
		// thaw returned, cannot answer before that.
		pauseBound = 50 * time.Millisecond
		pathBound  = mqttprobe.ProbeInterval + busyMargin
		cycles     = 3 // plain Docker's path stalls in most stop and kill cycles
		secretKey  = "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3Q="
	)
	runs := map[string]int64{}
	var pauseOut bytes.Buffer // what the pause run printed
	measure := func(t *testing.T, netns, fault string) {
		l := shortRun(t, base, fault)
		l.Config.DB = db
		l.Config.NetNS = netns
		l.Config.RestartCount = cycles
		l.Config.KeepRunning = 500 * time.Millisecond
		l.Config.KeepDead = 500 * time.Millisecond
		l.Config.Client = "external"
		l.Config.ClientCmd = clientCmd
		if fault == "pause" {
			l.Config.ConnectionString = "HostName=localhost;DeviceId=devicemtr;SharedAccessKey=" + secretKey
			// The key inline too (": " ignores its argument), as a command
			// that takes it as a flag would carry it.
			l.Config.ClientCmd = `: ` + secretKey + `; echo "my connection string: $MTTR_CONNECTION_STRING"; exec ` + l.Config.ClientCmd
			l.Out = &pauseOut
		}
		run, rows := runMttr(t, l)
		runs[netns+"/"+fault] = run.ID
		if run.Status != store.StatusCompleted || run.Broker != "docker" || run.NetNS != netns || len(rows) != cycles {
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
			if r.Error != "" || r.Published == 0 {
				t.Errorf("cycle %d: published %d error %q", r.Cycle, r.Published, r.Error)
			}
			checkDelivered(t, r, fault)
			switch {
			case fault == "pause":
				if rec > pauseBound {
					t.Errorf("cycle %d: recovery %v after a pause, want ≤ %v", r.Cycle, rec, pauseBound)
				}
			case rec > retry+busyMargin:
				t.Errorf("cycle %d: recovery %v (path %v), want ≤ %v + %v", r.Cycle, rec, path, retry, busyMargin)
			}
			if netns == "holder" && path > pathBound {
				t.Errorf("cycle %d: path %v with the namespace held, want ≤ %v", r.Cycle, path, pathBound)
			}
		}
		t.Logf("%s %s: recovery per cycle %v, path per cycle %v", netns, fault, recoveries, paths)
	}
	// The pause run last, the newest, for the report to compare with the
	// first.
	for _, tc := range []struct{ netns, fault string }{
		{"holder", "stop"}, {"holder", "kill"}, {"plain", "stop"}, {"plain", "kill"}, {"holder", "pause"},
	} {
		t.Run(tc.netns+"/"+tc.fault, func(t *testing.T) { measure(t, tc.netns, tc.fault) })
	}
	baseline, pause := runs["holder/stop"], runs["holder/pause"]
	if len(runs) != 5 || baseline == 0 || pause == 0 {
		t.Fatalf("runs completed: %v, want 5", runs)
	}

	// The key is fingerprinted or masked everywhere it could land.
	st := readStore(t, db)
	logPath := clientLog(db, "", pause)
	outputs := map[string][]byte{}
	for _, f := range []string{db, db + "-wal", logPath} {
		b, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		outputs[f] = b
	}
	if !strings.Contains(string(outputs[logPath]), "my connection string: HostName=localhost;DeviceId=devicemtr;SharedAccessKey="+client.Masked) {
		t.Error("the client's own printing of its connection string did not reach the log, masked")
	}
	rep, err := report.Build(t.Context(), st, report.Options{Last: 20, Baseline: strconv.FormatInt(baseline, 10), Alpha: 0.05})
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
	outputs["the pause run's output"] = pauseOut.Bytes()
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
	t.Parallel()
	dockertest.Engine(t)
	base, _ := sharedLab(t)
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
