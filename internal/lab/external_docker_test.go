package lab

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/store"
)

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
	py := python(t)
	script, err := filepath.Abs(filepath.Join("testdata", "paho_client.py"))
	if err != nil {
		t.Fatal(err)
	}
	base, _ := newLab(t, "localhost")
	build(t, base)

	for _, fault := range []string{"stop", "pause"} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			l := shortRun(t, base, fault)
			l.Config.Client = "external"
			l.Config.ClientCmd = py + " " + script
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
