package lab

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/store"
)

// downstreamRun is a stop run of 3 cycles in which a device that stays
// deaf is given up on after 3 s.
func downstreamRun(t *testing.T, base *Lab) *Lab {
	l := shortRun(t, base, "stop")
	l.Config.RestartCount = 3
	l.Config.RecoveryTimeout = 3 * time.Second
	return l
}

// TestDockerDownstreamPaho runs our paho device both ways an application
// treats its subscriptions after a reconnect (clean session, so the
// restarted broker has none): resubscribing in OnConnect, every cycle
// gets its commands back within its upstream recovery plus 100 ms and
// loses none; resubscribing never, every cycle's upstream comes back and
// its downstream does not, and `mage check` fails saying so.
func TestDockerDownstreamPaho(t *testing.T) {
	t.Parallel()
	dockertest.Engine(t)
	base, _ := sharedLab(t)
	for _, resubscribe := range []string{"onconnect", "none"} {
		t.Run(resubscribe, func(t *testing.T) {
			t.Parallel()
			l := downstreamRun(t, base)
			l.Config.Resubscribe = resubscribe
			run, rows := runMttr(t, l)
			if run.Status != store.StatusCompleted || len(rows) != 3 {
				t.Fatalf("run %+v with %d rows", run, len(rows))
			}
			for _, r := range rows {
				up, upOK := r.Recovery()
				down, downOK := r.Downstream()
				if !r.Listens || !upOK {
					t.Errorf("cycle %d: listens %v, upstream back %v", r.Cycle, r.Listens, upOK)
				}
				switch resubscribe {
				case "onconnect":
					if !downOK || down > up+100*time.Millisecond || r.C2DLost != 0 || r.C2DDuplicated != 0 || r.ResubscribedAt == 0 || r.Session != mttr.SessionNew || r.Error != "" {
						t.Errorf("cycle %d: downstream %v %v against upstream %v, lost %d, resubscribed %d, session %q, error %q",
							r.Cycle, down, downOK, up, r.C2DLost, r.ResubscribedAt, r.Session, r.Error)
					}
				case "none":
					if downOK || r.ResubscribedAt != 0 || !strings.HasPrefix(r.Error, "downstream not recovered within") {
						t.Errorf("cycle %d: downstream %v %v, resubscribed %d, error %q", r.Cycle, down, downOK, r.ResubscribedAt, r.Error)
					}
				}
			}
			var out strings.Builder
			l.Out = &out
			// A busy machine can bind a cycle (check then calls the run
			// inconclusive): the bed's verdict, not the client's.
			err := l.Check(t.Context())
			var inconclusive InconclusiveError
			if resubscribe == "onconnect" && err != nil && !errors.As(err, &inconclusive) {
				t.Errorf("check = %v\n%s", err, out.String())
			}
			if resubscribe == "none" && (err == nil || !strings.Contains(out.String(), "3 of 3 device-cycles did not recover (3 of them deaf")) {
				t.Errorf("check = %v\n%s", err, out.String())
			}
		})
	}
}

// TestDockerDownstreamExternal runs a client written in another language
// (Python, paho-mqtt) that takes commands: subscribing in its on-connect
// handler, its downstream is measured from the broker's side in every
// cycle; subscribing on its first connection only, it is recorded as not
// recovered. A client that never subscribes has no downstream, and
// recovers on its upstream alone.
func TestDockerDownstreamExternal(t *testing.T) {
	t.Parallel()
	dockertest.Engine(t)
	client := pythonClient(t, "paho_client.py")
	base, _ := sharedLab(t)
	for _, tt := range []struct {
		name, cmd string
		listens   bool
		back      bool
	}{
		{"resubscribes", "COMMANDS=onconnect " + client, true, true},
		{"subscribes once", "COMMANDS=once " + client, true, false},
		{"never subscribes", client, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := downstreamRun(t, base)
			l.Config.Client, l.Config.ClientCmd = "external", tt.cmd
			run, rows := runMttr(t, l)
			if run.Status != store.StatusCompleted || len(rows) != 3 {
				t.Fatalf("run %+v with %d rows", run, len(rows))
			}
			for _, r := range rows {
				_, downOK := r.Downstream()
				desc := fmt.Sprintf("cycle %d: listens %v, downstream %v, upstream %v, recovered %v, error %q", r.Cycle, r.Listens, downOK, r.UpstreamRecovered(), r.Recovered(), r.Error)
				if r.Listens != tt.listens || !r.UpstreamRecovered() || r.Recovered() != tt.back || downOK != (tt.listens && tt.back) {
					t.Error(desc)
				}
				if tt.listens && tt.back && (r.ResubscribedAt == 0 || r.C2DReceived == 0 || r.C2DLost != 0 || r.C2DDuplicated != 0) {
					t.Errorf("%s; resubscribed %d, received %d, lost %d", desc, r.ResubscribedAt, r.C2DReceived, r.C2DLost)
				}
			}
		})
	}
}

// TestDockerDownstreamSession keeps the device's session (clean session
// false) and never resubscribes: when the network is cut and restored the
// broker still has the session, and the commands come back with it; when
// the broker restarts it has lost the session (aedes keeps sessions in
// memory), and the device is deaf. Each cycle says which happened.
func TestDockerDownstreamSession(t *testing.T) {
	t.Parallel()
	dockertest.Engine(t)
	base, _ := sharedLab(t)
	for _, tt := range []struct {
		fault, session string
		back           bool
	}{
		{"disconnect", mttr.SessionResumed, true},
		{"stop", mttr.SessionNew, false},
	} {
		t.Run(tt.fault, func(t *testing.T) {
			t.Parallel()
			l := downstreamRun(t, base)
			l.Config.Fault, l.Config.CleanSession, l.Config.Resubscribe = tt.fault, false, "none"
			l.Config.RestartCount = 2
			_, rows := runMttr(t, l)
			reconnects := 0
			for _, r := range rows {
				session := tt.session
				if r.ReconnectedAt == 0 { // its connection survived the cut: no new session to speak of
					session = ""
				} else {
					reconnects++
				}
				if r.Session != session || r.DownstreamRecovered() != tt.back || !r.UpstreamRecovered() {
					t.Errorf("cycle %d: session %q, downstream back %v, upstream back %v; want %q, %v, true (error %q)",
						r.Cycle, r.Session, r.DownstreamRecovered(), r.UpstreamRecovered(), session, tt.back, r.Error)
				}
			}
			if reconnects == 0 {
				t.Error("the device never reconnected: nothing was learnt of its session")
			}
		})
	}
}
