package lab

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mttrlab/mttr/internal/certs"
	"github.com/mttrlab/mttr/internal/client"
	"github.com/mttrlab/mttr/internal/device"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/store"
)

// clientGrace is how long an external client gets between SIGTERM and
// SIGKILL when the run ends.
const clientGrace = 2 * time.Second

// Variables that mark an external client's processes as the run's, so that
// a later run can end those a killed run left behind.
const (
	envOwner = "MTTR_LAB_OWNER" // the owner label's value: "<machine>:<pid>"
	envRun   = "MTTR_LAB_RUN"   // the run id
)

// clientEnv is the environment an external client is started with: the
// contract a client author codes against (README "External clients"), and
// the run's marks.
func (l *Lab) clientEnv(runID int64, base device.Identity, deviceID string) ([]string, error) {
	cfg := l.Config
	ca, err := filepath.Abs(certs.For(cfg.CertDir, cfg.Host).CertPath)
	if err != nil {
		return nil, err
	}
	dial, port, err := net.SplitHostPort(cfg.BrokerAddr)
	if err != nil {
		return nil, fmt.Errorf("MTTR_BROKER_ADDR=%q: %w", cfg.BrokerAddr, err)
	}
	id := base
	id.DeviceID = deviceID
	return []string{
		"MTTR_BROKER_HOST=" + cfg.Host,
		"MTTR_BROKER_PORT=" + port,
		"MTTR_BROKER_ADDR=" + cfg.BrokerAddr,
		"MTTR_BROKER_DIAL_HOST=" + dial,
		"MTTR_CA_FILE=" + ca,
		"MTTR_DEVICE_ID=" + deviceID,
		"MTTR_CONNECTION_STRING=" + fmt.Sprintf("HostName=%s;DeviceId=%s;SharedAccessKey=%s", id.HostName, id.DeviceID, id.SharedAccessKey),
		"MTTR_KEEP_ALIVE_SECONDS=" + strconv.Itoa(int(cfg.KeepAlive/time.Second)),
		"MTTR_TOPIC=" + id.Topic(),
		"MTTR_C2D_TOPIC=" + id.CommandTopic() + "#",
		envOwner + "=" + owner(),
		envRun + "=" + strconv.FormatInt(runID, 10),
	}, nil
}

// endLeftoverClients ends the process groups of external clients whose run
// was killed on this machine (its process is gone): the watcher in each
// group ends it when the run dies, unless a client left its group.
func (l *Lab) endLeftoverClients() error {
	marked, err := client.FindMarked(envOwner)
	if err != nil {
		return err
	}
	for _, m := range marked {
		if _, gone := ownerGone(m.Value); !gone {
			continue
		}
		if err := m.End(); err != nil {
			return err
		}
		l.printf("ended client process %d (group %d, %q): the run that started it (%s) is gone\n", m.PID, m.PGID, m.Command, m.Value)
	}
	return nil
}

// newWatch makes the watch of the external clients, one per device, before
// the broker starts, so that it sees every broker event.
func (l *Lab) newWatch(id device.Identity) *externalWatch {
	ids := make([]string, l.Config.Devices)
	for i := range ids {
		ids[i] = mttr.DeviceID(id.DeviceID, i)
	}
	w := &externalWatch{}
	w.Watch = mttr.NewWatch(ids, func() error {
		if sup := w.sup.Load(); sup != nil {
			return sup.Failed()
		}
		return nil
	})
	return w
}

// externalWatch ties a watch to the supervisor of its clients, which
// starts after it.
type externalWatch struct {
	*mttr.Watch
	sup atomic.Pointer[client.Supervisor]
}

// clientRun is what startExternal needs of the run.
type clientRun struct {
	id               int64
	base             device.Identity // the devices' identity, DeviceID the first one's
	blog             *mttr.BrokerLog
	verifier, sender device.Config // the verifier's and the commands' sender's, from mttr.Verifier
}

// startExternal starts one external client per device of w and returns
// once every client has published through the broker at least once.
func (l *Lab) startExternal(ctx context.Context, w *externalWatch, run clientRun, cleanup *cleanups) error {
	cfg, runID, id := l.Config, run.id, run.base
	if err := w.ConnectVerifier(ctx, run.verifier); err != nil {
		return err
	}
	cleanup.add(w.Close)
	if err := l.refuseTaken(ctx, run.blog, run.verifier.Identity.DeviceID, append(w.IDs(), run.sender.Identity.DeviceID)); err != nil {
		return err
	}
	if err := w.ConnectCommands(ctx, run.sender, cfg.C2DInterval); err != nil {
		return err
	}

	logPath := clientLog(cfg.DB, cfg.HTML, runID)
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("client log: %w", err)
	}
	cleanup.add(func() { logFile.Close() })
	ids := w.IDs()
	specs := make([]client.Spec, len(ids))
	for i, dev := range ids {
		env, err := l.clientEnv(runID, id, dev)
		if err != nil {
			return err
		}
		specs[i] = client.Spec{Name: dev, Command: cfg.ClientCmd, Env: env, Secrets: device.KeyForms(id.SharedAccessKey)}
		if l.path != nil && l.path.hosts != nil { // readdress: the run answers the broker's name
			specs[i].Hosts = l.path.hosts.Path()
		}
	}
	started := time.Now()
	sup, err := client.Supervise(specs, logFile, clientGrace)
	if err != nil {
		return err
	}
	w.sup.Store(sup)
	cleanup.addBounded(sup.Stop)
	l.printf("started %d external client(s): %s; their output goes to %s\n", len(specs), cfg.Vars()["MTTR_CLIENT_CMD"], logPath)
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	cleanup.add(stop)
	go func() {
		for {
			select {
			case e := <-sup.Exits():
				note := e.String()
				if e.Restarted {
					note += "; restarted"
				}
				w.Exited(e.Name, note)
				l.printf("%s\n", note)
			case <-fctx.Done():
				return
			}
		}
	}()

	wait, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	for !w.Published(started) {
		select {
		case <-w.Changed():
		case <-wait.Done():
			return fmt.Errorf("not every external client published through the broker within %s (MTTR_READY_TIMEOUT); see %s", cfg.ReadyTimeout, logPath)
		}
		if err := sup.Failed(); err != nil {
			return err
		}
	}
	return nil
}

// clientLog is where the external clients of run runID of database db
// write: beside an SQLite database, named after it and the run
// ("mttr.db-clients-run-7.log"), so that two databases in one
// directory keep their logs apart; for PostgreSQL beside the HTML report
// html, on this machine, named after the database's host and name.
func clientLog(db, html string, runID int64) string {
	if !store.IsPostgres(db) {
		return fmt.Sprintf("%s-clients-run-%d.log", db, runID)
	}
	name := "postgres"
	if u, err := url.Parse(db); err == nil {
		name += "-" + u.Hostname() + "-" + strings.TrimPrefix(u.Path, "/")
	}
	name = strings.Map(func(r rune) rune {
		if r == '/' || r == os.PathSeparator || r < ' ' {
			return '_'
		}
		return r
	}, name)
	return filepath.Join(filepath.Dir(html), fmt.Sprintf("%s-clients-run-%d.log", name, runID))
}
