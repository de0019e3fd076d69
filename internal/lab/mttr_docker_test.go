package lab

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/store"
)

// shortRun is a Lab for a short experiment that shares base's image and
// certificate but has its own container, port and database.
func shortRun(t *testing.T, base *Lab, fault string) *Lab { return shortRunTB(t, base, fault) }

func shortRunTB(t testing.TB, base *Lab, fault string) *Lab {
	t.Helper()
	l := *base
	l.Out = io.Discard
	l.Config.Fault = fault
	l.Config.Container = dockertest.Name("expecto-patronum")
	l.Config.Port = dockertest.FreePort(t)
	l.Config.BrokerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(l.Config.Port))
	l.Config.DB = filepath.Join(t.TempDir(), "mttr.db")
	l.Config.RestartCount = 2
	l.Config.KeepRunning = time.Second
	l.Config.KeepDead = 2 * time.Second
	l.Config.SendInterval = 500 * time.Millisecond
	l.Config.MaxReconnectInterval = time.Second
	l.Config.RecoveryTimeout = 30 * time.Second
	return &l
}

// runMttr runs l's experiment (at most 3 minutes) and reads back its run
// and cycles.
func runMttr(t *testing.T, l *Lab) (store.Run, []mttr.Cycle) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	id, err := l.Mttr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return readRun(t, l.Config.DB, id)
}

// checkOrder asserts fault_at ≤ healed_at, fault_at < ready_at ≤
// first_ack_at, and that the broker's own moment after the fault (its
// listening line, or the first client event after it resumed) was
// recorded, so that the path delay is known. A frozen broker can answer a
// moment before the call that thawed it returns: ready_at may come before
// healed_at.
func checkOrder(t *testing.T, r mttr.Cycle) {
	t.Helper()
	if !(r.FaultAt > 0 && r.FaultAt <= r.HealedAt && r.FaultAt < r.ReadyAt && r.ReadyAt <= r.FirstAckAt) {
		t.Errorf("cycle %d out of order: fault %d healed %d ready %d first ack %d", r.Cycle, r.FaultAt, r.HealedAt, r.ReadyAt, r.FirstAckAt)
	}
	if _, ok := r.Path(); !ok {
		t.Errorf("cycle %d: no path: listening_at %d, resumed_at %d", r.Cycle, r.ListeningAt, r.ResumedAt)
	}
	// A broker that restarted cannot answer before it listens.
	if r.ListeningAt != 0 && r.ReadyAt < r.ListeningAt {
		t.Errorf("cycle %d: ready %d before listening %d", r.Cycle, r.ReadyAt, r.ListeningAt)
	}
}

// checkDelivered checks that the verifier received every message of r
// that the broker did (external clients) or acknowledged (our devices),
// but one in a stop or kill. aedes acknowledges a QoS 1 message before it
// passes it on, and keeps sessions in memory: a message it took in the
// instant it was stopped (its shutdown closes every connection) or
// killed can be acknowledged and never reach the verifier (SIGKILL on the
// PUBACK: 93 of 100 lost; a device publishing every 2 ms through SIGTERM:
// 1 lost in 6 of 30 stops). That instant is shorter than any client's
// send interval here, on a machine with a core to spare, so it holds one
// message at most. Nothing is lost in a pause, and nothing is lost
// unacknowledged.
func checkDelivered(t *testing.T, r mttr.Cycle, fault string) {
	t.Helper()
	gone := 0
	if fault == "stop" || fault == "kill" {
		gone = 1
	}
	if r.Delivered < r.Published-gone || r.Lost != 0 {
		t.Errorf("cycle %d: published %d, delivered %d, lost %d after %s: want at most %d acknowledged and not delivered, none lost",
			r.Cycle, r.Published, r.Delivered, r.Lost, fault, gone)
	}
}

func readRun(t *testing.T, path string, id int64) (store.Run, []mttr.Cycle) {
	t.Helper()
	db := readStore(t, path)
	r, err := db.GetRun(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := db.Cycles(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r, rows
}

func TestDockerMttr(t *testing.T) {
	t.Parallel()
	eng := dockertest.Engine(t)
	base, _ := sharedLab(t)

	for _, fault := range []string{"stop", "kill", "pause", "recreate", "restart", "disconnect"} {
		t.Run(fault, func(t *testing.T) {
			t.Parallel()
			l := shortRun(t, base, fault)
			run, rows := runMttr(t, l)
			if run.Status != store.StatusCompleted || run.Fault != fault || run.ImageID == "" || run.EngineVersion == "" || run.FinishedAt.IsZero() {
				t.Errorf("run row %+v", run)
			}
			var vars map[string]string
			if err := json.Unmarshal([]byte(run.ConfigJSON), &vars); err != nil || vars["MTTR_MAX_RECONNECT_INTERVAL"] != "1s" || vars["MTTR_FAULT"] != fault {
				t.Errorf("config_json %s (%v)", run.ConfigJSON, err)
			}
			if len(rows) != 2 {
				t.Fatalf("%d cycle rows, want 2", len(rows))
			}
			for _, r := range rows {
				checkOrder(t, r)
				if r.Error != "" {
					t.Errorf("cycle %d: %s", r.Cycle, r.Error)
				}
				// With the reconnect backoff capped at 1 s, a device is back
				// within about a second of the broker.
				if rec, ok := r.Recovery(); !ok || rec > 2*time.Second {
					t.Errorf("cycle %d: recovery %s with MTTR_MAX_RECONNECT_INTERVAL=1s", r.Cycle, rec)
				}
				switch fault {
				case "pause": // 2 s frozen, keep-alive 15 s: nobody notices
					if r.LostAt != 0 || r.ReconnectedAt != 0 {
						t.Errorf("cycle %d: pause shorter than keep-alive was noticed: lost %d", r.Cycle, r.LostAt)
					}
					if r.Lost != 0 || r.Acknowledged != r.Published || r.Delivered != r.Published {
						t.Errorf("cycle %d: QoS 1 messages lost in a pause: %+v", r.Cycle, r)
					}
				default:
					if r.LostAt == 0 || r.ReconnectedAt == 0 || r.ReconnectAttempts < 1 {
						t.Errorf("cycle %d: lost %d reconnected %d attempts %d", r.Cycle, r.LostAt, r.ReconnectedAt, r.ReconnectAttempts)
					}
				}
			}
			if _, err := eng.Find(t.Context(), l.Config.Container); !errors.Is(err, broker.ErrNotFound) {
				t.Errorf("broker container left behind: %v", err)
			}
		})
	}
}

// cancelOn cancels when a line containing marker is written.
type cancelOn struct {
	marker string
	cancel func()
}

func (c *cancelOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), c.marker) {
		c.cancel()
	}
	return len(p), nil
}

// TestDockerMttrInterruptedAndAbandoned interrupts a run, which removes its
// container and is marked interrupted, then leaves a container and a
// running row for a run whose process is gone: the next run marks it
// abandoned and removes the container. It is not parallel: a run that
// starts beside it would remove what the dead run left before the next run
// is there to.
func TestDockerMttrInterruptedAndAbandoned(t *testing.T) {
	eng := dockertest.Engine(t)
	base, _ := sharedLab(t)
	l := shortRun(t, base, "stop")
	l.Config.RestartCount = 5

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	l.Out = &cancelOn{marker: "cycle 1/5", cancel: cancel}
	id, err := l.Mttr(ctx)
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("Mttr after cancel = %v", err)
	}
	run, rows := readRun(t, l.Config.DB, id)
	if run.Status != store.StatusInterrupted || len(rows) < 1 || len(rows) > 2 || rows[0].Error != "" {
		t.Fatalf("interrupted run %+v with %d rows", run, len(rows))
	}
	if _, err := eng.Find(t.Context(), l.Config.Container); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("broker container left behind after interrupt: %v", err)
	}

	// A run killed with SIGKILL leaves its row running and its container
	// up; a process that has exited stands in for it.
	gone := deadPID(t)
	machine, _ := os.Hostname()
	db, err := store.Open(t.Context(), l.Config.DB)
	if err != nil {
		t.Fatal(err)
	}
	deadID, err := db.StartRun(t.Context(), store.Run{StartedAt: time.Now(), Fault: "stop", ConfigJSON: "{}", Machine: machine, PID: gone})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	labels := runLabels(deadID)
	labels[LabelOwner] = machine + ":" + strconv.Itoa(gone)
	leftover := shortRun(t, base, "stop").Config.Container
	if _, err = eng.Run(t.Context(), broker.RunSpec{Name: leftover, Image: l.Config.Image, Bind: "127.0.0.1", Labels: labels}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Remove(context.Background(), leftover) })

	next := shortRun(t, base, "stop")
	next.Config.DB = l.Config.DB
	next.Config.RestartCount = 1
	if _, err := next.Mttr(t.Context()); err != nil {
		t.Fatal(err)
	}
	dead, _ := readRun(t, l.Config.DB, deadID)
	if dead.Status != store.StatusAbandoned {
		t.Errorf("killed run is %q, want abandoned", dead.Status)
	}
	if _, err := eng.Find(t.Context(), leftover); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("leftover container not removed: %v", err)
	}
}
