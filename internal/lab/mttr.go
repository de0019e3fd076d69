package lab

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/mttrlab/mttr/internal/bedcost"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/device"
	"github.com/mttrlab/mttr/internal/host"
	"github.com/mttrlab/mttr/internal/interrupt"
	"github.com/mttrlab/mttr/internal/mqttprobe"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/netfault"
	"github.com/mttrlab/mttr/internal/store"
)

// Labels that tie a broker container to the run it serves, so that a later
// run can clean up after one that was killed.
const (
	LabelRun   = "org.mttrlab.run"   // run id
	LabelOwner = "org.mttrlab.owner" // "<machine>:<pid>" of the process running it
)

// cleanupTimeout bounds all the work done once a run has ended, together:
// mage gives a target 5 s after Ctrl-C before it exits, and the run's
// outcome is recorded before this starts.
const cleanupTimeout = 4 * time.Second

// Mttr runs the recovery experiment and stores every cycle in MTTR_DB. It
// returns the run id. When ctx ends (Ctrl-C, SIGTERM: see Do) it stops:
// the run is marked interrupted, its completed cycles are kept, and the
// broker is removed, without being brought back first.
//
// With a study's settings (Config.Cells) it runs the study (runStudy) and
// returns the id of the last run it made.
func (l *Lab) Mttr(ctx context.Context) (int64, error) {
	l = l.withSyncedOutput() // progress and client exits print from different goroutines
	if l.Config.Cells != nil && l.study == nil {
		return l.runStudy(ctx)
	}
	cfg := l.Config
	id, err := device.ParseConnectionString(cfg.ConnectionString)
	if err != nil {
		return 0, fmt.Errorf("MTTR_CONNECTION_STRING: %w", err)
	}
	if err := fleetFits(cfg.Devices, cfg.Client == "external", host.Machine()); err != nil {
		return 0, err
	}
	db, err := store.Open(ctx, cfg.DB)
	if err != nil {
		return 0, fromDB(err)
	}
	defer db.Close()
	if err := l.abandonRuns(ctx, db); err != nil {
		return 0, err
	}
	if err := l.abandonNoted(ctx, cfg.DB); err != nil {
		return 0, err
	}
	if err := l.endLeftoverClients(); err != nil {
		return 0, err
	}
	bed, tlsConf, err := l.openTestBed(ctx)
	if err != nil {
		return 0, err
	}
	defer bed.close()
	vars := store.SettingsJSON(cfg.Vars())
	machine, _ := os.Hostname()
	run := store.Run{
		StartedAt: time.Now(), Label: cfg.Label, Fault: cfg.Fault,
		KeepAlive: cfg.KeepAlive, KeepDead: cfg.KeepDead, KeepRunning: cfg.KeepRunning,
		Devices: cfg.Devices, CyclesPlanned: cfg.RestartCount, ConfigJSON: vars,
		ToolVersion: toolVersion(ctx), Host: cfg.Host, Machine: machine, PID: os.Getpid(), Client: cfg.Client,
	}
	if l.study != nil {
		run.StudyID, run.StudyPosition = l.study.id, l.study.position
	}
	bed.describe(&run)
	runID, err := db.StartRun(ctx, run)
	if err != nil {
		return 0, err
	}
	unnote, err := noteRun(cfg.DB, runID, owner())
	if err != nil {
		l.printf("note: %v; should this run be killed, only a later run on %s marks it abandoned\n", err, store.Shown(cfg.DB))
		unnote = func() {}
	}
	defer unnote() // after the run is finished, below
	run.ID = runID
	rec := &runRecord{db: db, run: run, printf: l.printf, grace: cfg.StoreGrace,
		rescue: filepath.Join(filepath.Dir(cfg.HTML), fmt.Sprintf("unsaved-run-%d-%d.db", runID, run.StartedAt.UnixNano()))}
	// finish records the outcome; a store that will not take it turns
	// even a completed run into an error naming the rescue file.
	var storeErr error
	finish := func(status string, err error) {
		text := ""
		if err != nil {
			text = err.Error()
		}
		storeErr = rec.finish(ctx, status, text, status == store.StatusInterrupted)
	}

	var cleanup cleanups
	sum, runErr := l.experiment(ctx, bed, rec, id, tlsConf, &cleanup)
	// Record the outcome first: after an interrupt the process may be
	// given only a few seconds.
	defer cleanup.run(ctx)
	switch {
	case runErr == nil:
		finish(store.StatusCompleted, nil)
	case errors.Is(runErr, mttr.ErrInterrupted) || ctx.Err() != nil:
		why := ""
		if r := interrupt.Reason(ctx); r != "" {
			why = " (" + r + ")"
			runErr = fmt.Errorf("%s: %w", r, runErr)
		}
		finish(store.StatusInterrupted, runErr)
		done, cut := sum.Completed(cfg.RestartCount)
		if storeErr != nil {
			return runID, fmt.Errorf("run %d interrupted%s: %d of %d cycles completed, %d cut short: %w", runID, why, done, cfg.RestartCount, cut, storeErr)
		}
		return runID, fmt.Errorf("run %d interrupted%s: %d of %d cycles completed, %d cut short; they are stored in %s", runID, why, done, cfg.RestartCount, cut, store.Shown(cfg.DB))
	default:
		finish(store.StatusFailed, runErr)
		return runID, fmt.Errorf("run %d failed after %d of %d cycles: %w", runID, sum.Cycles, cfg.RestartCount, errors.Join(runErr, storeErr))
	}
	l.printf("\n")
	sum.Print(l.Out)
	if storeErr != nil {
		return runID, fmt.Errorf("run %d completed %d cycles: %w", runID, sum.Cycles, storeErr)
	}
	l.printf("run %d completed: %d cycles × %d devices stored in %s\n", runID, sum.Cycles, cfg.Devices, store.Shown(cfg.DB))
	return runID, nil
}

// cleanups are run last first, all within cleanupTimeout.
type cleanups []func(context.Context)

func (c *cleanups) add(f func()) { *c = append(*c, func(context.Context) { f() }) }

// addBounded adds f, which gets the context that carries the deadline.
func (c *cleanups) addBounded(f func(context.Context)) { *c = append(*c, f) }

func (c cleanups) run(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	for i := len(c) - 1; i >= 0; i-- {
		c[i](ctx)
	}
}

// experiment starts the broker and the devices and runs the cycles. What it
// started is stopped by cleanup, whatever happened.
func (l *Lab) experiment(ctx context.Context, bed testBed, rec *runRecord, id device.Identity, tlsConf *tls.Config, cleanup *cleanups) (mttr.Summary, error) {
	runID := rec.run.ID
	cfg := l.Config
	verifierID := id.DeviceID + "-verifier"
	var watch *externalWatch
	if cfg.Client == "external" {
		watch = l.newWatch(id)
	}
	blog := &mttr.BrokerLog{}
	var ours atomic.Pointer[mttr.Fleet] // set once our devices are connected
	observe := func(e brokerlog.Event) {
		blog.Observe(e)
		if watch != nil {
			watch.Observe(e)
		}
		if f := ours.Load(); f != nil {
			f.Observe(e)
		}
	}
	// The broker keeps a session for the verifier from its start, so that
	// what devices publish before the verifier is back is queued for it.
	env := []string{"MQTT_VERIFIER_ID=" + verifierID, "MQTT_VERIFIER_TOPIC=" + mttr.TelemetryTopics}
	startup, err := bed.start(ctx, runID, env, observe, cleanup)
	if err != nil {
		return mttr.Summary{}, err
	}

	probeAddr := cfg.BrokerAddr
	var path *netPath
	if l.networked() {
		// The run's devices dial the path: a copy of the lab says so, and
		// the caller's keeps its settings.
		copied := *l
		l = &copied
		if path, err = l.openNetPath(ctx, bed, cleanup); err != nil {
			return mttr.Summary{}, err
		}
		l.path = path
		// This run's devices and external clients dial the path; the
		// verifier, the sender of commands and the readiness probe reach the
		// broker behind any link, so that its delays are the devices' alone.
		l.Config.BrokerAddr, probeAddr = path.dial(), path.direct
	}
	verifier := mttr.Verifier(l.deviceConfig(id, verifierID, tlsConf))
	cloud := mttr.Verifier(l.deviceConfig(id, mttr.CloudID(id.DeviceID), tlsConf))
	verifier.BrokerAddr, cloud.BrokerAddr = probeAddr, probeAddr
	if path != nil { // the cloud's side: no fault of the devices' touches it
		verifier.Dial, cloud.Dial = path.dialOwn, path.dialOwn
	}
	var fleet mttr.Devices
	if watch != nil {
		if err := l.startExternal(ctx, watch, clientRun{id: runID, base: id, blog: blog, verifier: verifier, sender: cloud}, cleanup); err != nil {
			return mttr.Summary{}, err
		}
		fleet = watch.Watch
	} else {
		devices := make([]device.Config, cfg.Devices)
		ids := make([]string, cfg.Devices)
		for i := range devices {
			ids[i] = mttr.DeviceID(id.DeviceID, i)
			devices[i] = l.deviceConfig(id, ids[i], tlsConf)
		}
		if err := l.refuseTaken(ctx, blog, mqttprobe.ProbeClientPrefix, append(ids, cloud.Identity.DeviceID)); err != nil {
			return mttr.Summary{}, err
		}
		f, err := mttr.Connect(ctx, mttr.FleetSpec{Devices: devices, Verifier: verifier, Interval: cfg.SendInterval, Progress: l.Out,
			Cloud: cloud, CommandInterval: cfg.C2DInterval})
		if err != nil {
			return mttr.Summary{}, err
		}
		cleanup.add(f.Close)
		ours.Store(f)
		fleet = f
	}
	var fault mttr.Fault
	if netfault.Is(cfg.Fault) {
		var quiet func(bool) // Fleet and Watch: our devices and commands, or our commands
		if q, ok := fleet.(interface{ Quiet(bool) }); ok {
			quiet = q.Quiet
		}
		fault = l.newNetOutage(path, quiet, func(ctx context.Context) (time.Time, error) {
			if path.moved != nil { // where the devices now reach it
				return bed.waitReady(ctx, path.dial(), path.deviceDial())
			}
			return bed.waitReady(ctx, path.direct, path.dialOwn)
		})
	} else {
		var dial netfault.Dial
		if path != nil {
			dial = path.dialOwn
		}
		fault, err = bed.fault(ctx, cleanup, probeAddr, dial)
	}
	if err != nil {
		return mttr.Summary{}, err
	}

	qos := ""
	if cfg.QoS == 0 {
		qos = " (QoS 0: unacknowledged, loss is not measured)"
	}
	who := "device(s)"
	if cfg.Client == "external" {
		who = "external client(s), seen from the broker"
	}
	var r store.Run
	bed.describe(&r)
	l.printf("run %d: fault %s, %d cycles, %d %s, keep-running %s, keep-dead %s, keep-alive %s%s; broker (%s) ready %s after start\n",
		runID, cfg.Fault, cfg.RestartCount, cfg.Devices, who, cfg.KeepRunning, cfg.KeepDead, cfg.KeepAlive, qos,
		r.TestBed(), startup.Round(time.Millisecond))
	plan := mttr.Plan{
		Cycles: cfg.RestartCount, KeepRunning: cfg.KeepRunning, KeepRunningJitter: cfg.KeepRunningJitter, KeepDead: cfg.KeepDead,
		RecoveryTimeout: cfg.RecoveryTimeout, QoS: byte(cfg.QoS),
	}
	sink := rec.save
	// Devices on a network path dial the broker's own address, past the
	// path of Docker's that can hold a SYN; one that the fault holds is the
	// device's own wait, part of its recovery.
	held := bed.path()
	if path != nil {
		held = nil
	}
	meter := bedMeter{probe: bedcost.StartProbe(ctx, bedcost.ProbeInterval), broker: bed.brokerCPU}
	defer meter.probe.Stop()
	if watch != nil {
		meter.clients = func() []int {
			if sup := watch.sup.Load(); sup != nil {
				return sup.Groups()
			}
			return nil
		}
	}
	return mttr.Experiment{Plan: plan, Fault: fault, Devices: fleet, Sink: sink, Broker: blog, Path: held, Progress: l.Out, Bed: meter}.Run(ctx)
}

// takenWait bounds the wait for the broker's log to show the connect that
// tells it has caught up, before ids are looked up in it.
const takenWait = 5 * time.Second

// refuseTaken refuses to go on while a client id the run is about to use
// is already connected to its broker: another client would take over each
// connection the run's own makes, and the other way round. It looks once
// the log has shown the connect of client after (one the run made just
// before), so that whatever connected before that is in it. A client that
// connects later, before or after the run's own, is not seen.
func (l *Lab) refuseTaken(ctx context.Context, blog *mttr.BrokerLog, after string, ids []string) error {
	if !blog.AwaitConnect(ctx, after, takenWait) && ctx.Err() == nil {
		l.printf("note: the broker's log did not show %s connecting within %s: whether client ids are already taken is not known\n", after, takenWait)
	}
	for _, id := range ids {
		if since, ok := blog.ConnectedSince(id); ok {
			return fmt.Errorf("client id %s is already connected to the broker (since %s), before this run's own: another client uses it, "+
				"perhaps one a run on another machine left behind; stop it, or give this run other ids with MTTR_CONNECTION_STRING's DeviceId",
				id, since.Format("15:04:05.000"))
		}
	}
	return nil
}

func (l *Lab) deviceConfig(base device.Identity, deviceID string, tlsConf *tls.Config) device.Config {
	cfg := l.Config
	id := base
	id.DeviceID = deviceID
	return device.Config{
		Identity:   id,
		BrokerAddr: cfg.BrokerAddr,
		TLS:        cfg.TLS.Apply(tlsConf),
		Timings: device.Timings{
			KeepAlive:            cfg.KeepAlive,
			PingTimeout:          cfg.PingTimeout,
			ConnectTimeout:       cfg.ConnectTimeout,
			MaxReconnectInterval: cfg.MaxReconnectInterval,
			ConnectRetryInterval: cfg.ConnectRetryInterval,
		},
		CleanSession: cfg.CleanSession,
		QoS:          byte(cfg.QoS),
		Resubscribe:  cfg.Resubscribe == "onconnect",
		Dial:         l.path.deviceDial(),
	}
}

// currentImage returns the id of the broker image for MTTR_HOST's current
// certificate, building the certificate and the image when either is
// missing or stale, and the TLS configuration that trusts that certificate.
func (l *Lab) currentImage(ctx context.Context, eng *broker.Engine) (string, *tls.Config, error) {
	hc, err := l.cert(ctx, true)
	if err != nil {
		return "", nil, err
	}
	trust := hc.trust(l.Config.Host)
	source, err := broker.SourceDigest(l.BuildDir)
	if err != nil {
		return "", nil, err
	}
	img, err := eng.InspectImage(ctx, l.Config.Image)
	var building string // what is printed when it builds
	switch {
	case errors.Is(err, broker.ErrNotFound):
		building = fmt.Sprintf("image %s not found; building it", l.Config.Image)
	case err != nil:
		return "", nil, err
	default:
		switch certOK, sourceOK := imageCurrent(img, l.Config.Host, hc.fp, source); {
		case certOK && sourceOK:
			return img.ID, trust, nil
		case !sourceOK:
			building = fmt.Sprintf("image %s was built from other %s/ sources; rebuilding", l.Config.Image, l.BuildDir)
		default:
			building = fmt.Sprintf("image %s carries another certificate; rebuilding", l.Config.Image)
		}
	}
	// Another checkout (another certificate) may have moved the tag: its
	// image for this certificate and these sources is still there, and a
	// tag costs nothing where a build costs a minute and moves the tag
	// back from under the other.
	if id, ferr := eng.FindBuilt(ctx, l.Config.Host, hc.fp, source); ferr == nil {
		if terr := eng.Tag(ctx, id, l.Config.Image); terr == nil {
			l.printf("image %s: tagged the image already built for this certificate and these sources (%s), not rebuilt\n", l.Config.Image, id)
			return id, trust, nil
		}
	}
	l.printf("%s\n", building)
	if err := l.Image(ctx); err != nil {
		return "", nil, err
	}
	id, err := eng.ImageID(ctx, l.Config.Image)
	return id, trust, err
}

func runLabels(runID int64) map[string]string {
	return map[string]string{
		LabelRun:   strconv.FormatInt(runID, 10),
		LabelOwner: owner(),
	}
}

// owner is this process as LabelOwner names it: "<machine>:<pid>".
func owner() string {
	machine, _ := os.Hostname()
	return machine + ":" + strconv.Itoa(os.Getpid())
}

// removeLeftovers removes broker containers, their readdress networks
// and hosts files, whose run was killed on this machine (its process is
// gone). Those of live processes, or of other machines, are left alone.
func (l *Lab) removeLeftovers(ctx context.Context, eng *broker.Engine) error {
	for _, kind := range []struct {
		what   string
		list   func(context.Context, string) ([]broker.LeftOver, error)
		remove func(context.Context, string) error
	}{
		{"container", eng.Leftovers, eng.RemoveID},
		{"network", eng.LeftoverNetworks, eng.RemoveNetwork}, // after the containers attached to them
	} {
		left, err := kind.list(ctx, LabelOwner)
		if err != nil {
			return err
		}
		for _, c := range left {
			if _, gone := ownerGone(c.Label); !gone {
				continue
			}
			if err := kind.remove(ctx, c.ID); err != nil {
				return err
			}
			l.printf("removed %s %s: the process that made it (%s) is gone\n", kind.what, c.Name, c.Label)
		}
	}
	hosts, err := netfault.RemoveStaleHosts("", host.Alive)
	for _, f := range hosts {
		l.printf("removed %s: the run that wrote it is gone\n", f)
	}
	return err
}

// abandonRuns marks runs of this database abandoned when the process that
// ran them on this machine is gone.
func (l *Lab) abandonRuns(ctx context.Context, db *store.Store) error {
	running, err := db.Running(ctx)
	if err != nil {
		return err
	}
	machine, _ := os.Hostname()
	for _, r := range running {
		if r.Machine == machine && !host.Alive(r.PID) {
			if err := db.FinishRun(ctx, r.ID, store.StatusAbandoned, "the process running it was killed"); err != nil {
				return err
			}
			l.printf("marked run %d abandoned\n", r.ID)
		}
	}
	return nil
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ownerGone reads an owner label, "<machine>:<pid>". gone is true when the
// run ran on this machine and its process is gone; pid is 0 when the label
// names another machine or none, whose process cannot be looked at.
func ownerGone(label string) (pid int, gone bool) {
	name, p, ok := strings.Cut(label, ":")
	n, err := strconv.Atoi(p)
	machine, _ := os.Hostname()
	if !ok || err != nil || name != machine {
		return 0, false
	}
	return n, !host.Alive(n)
}

// refuseLive refuses to touch our container called name while the run that
// owns it is still running on this machine: a second run at the same time
// needs a container and a port of its own.
func (l *Lab) refuseLive(ctx context.Context, eng *broker.Engine, name string) error {
	c, err := eng.Find(ctx, name)
	if err != nil {
		if errors.Is(err, broker.ErrNotFound) {
			return nil
		}
		return err
	}
	n, gone := ownerGone(c.Labels[LabelOwner])
	if gone || n == 0 {
		return nil
	}
	return fmt.Errorf("container %s belongs to run %s, which is still running (pid %d): refusing to touch it; "+
		"to run another at the same time, give it its own MTTR_CONTAINER and MTTR_PORT", name, c.Labels[LabelRun], n)
}

// toolVersion is the VCS revision the tool was built from: from the build
// information when the go command stamped it, else (mage builds the
// magefile from a file list, which is not stamped) from git in the working
// directory, with "-dirty" for uncommitted changes; "unknown" otherwise.
func toolVersion(ctx context.Context) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "-dirty"
				}
			}
		}
		if rev != "" {
			return rev + modified
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty", "--abbrev=40").Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "unknown"
}
