package lab

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/mttrlab/mttr/internal/bedcost"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/localbroker"
	"github.com/mttrlab/mttr/internal/mqttprobe"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/netfault"
	"github.com/mttrlab/mttr/internal/store"
	"github.com/mttrlab/mttr/internal/synsent"
)

// testBed is where a run's broker lives: a Docker container, whose network
// namespace a holder container may keep across restarts, or a local Node
// process (MTTR_BROKER).
type testBed interface {
	// describe fills the run row's fields about the test bed.
	describe(r *store.Run)
	// start starts a fresh broker whose events go to observe, registers
	// its removal with cleanup, and returns once it answers, with the time
	// that took from its start.
	start(ctx context.Context, runID int64, env []string, observe func(brokerlog.Event), cleanup *cleanups) (time.Duration, error)
	// fault prepares MTTR_FAULT, a broker fault, against the broker start
	// made, probing its readiness at addr over connections dial opens (nil:
	// from any local port).
	fault(ctx context.Context, cleanup *cleanups, addr string, dial netfault.Dial) (mttr.Fault, error)
	// waitReady waits until the broker answers an MQTT CONNECT at addr over
	// a connection dial opens, and fails at once if the broker died.
	waitReady(ctx context.Context, addr string, dial netfault.Dial) (time.Time, error)
	// direct is the broker's own address, which a device reaches with no
	// proxy between.
	direct() (string, error)
	// netfilter starts a helper that changes the packet filter in the
	// broker's network namespace; the broker's removal removes it.
	netfilter(ctx context.Context, cleanup *cleanups) (*broker.Netfilter, error)
	// readdress puts the broker on a network of its own too, where the
	// readdress fault moves it; the broker's removal removes it.
	readdress(ctx context.Context) (*broker.Readdress, error)
	// path watches connections the network path holds on the way to the
	// broker, where it can; nil where it cannot.
	path() mttr.HeldPath
	// brokerCPU is the CPU the broker has used since it last started, and
	// when that was; ok is false when it cannot be read (an engine on
	// another machine, a broker that does not run).
	brokerCPU(ctx context.Context) (started time.Time, used time.Duration, ok bool)
	close()
}

// openTestBed prepares MTTR_BROKER's test bed: for Docker the engine, the
// removal of what killed runs left, the image and the engine's clock; for
// a process the broker's installed sources. It returns the TLS
// configuration that trusts the broker.
func (l *Lab) openTestBed(ctx context.Context) (testBed, *tls.Config, error) {
	if l.Config.Broker == "process" {
		return l.openProcessBed(ctx)
	}
	eng, err := l.engine(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := l.removeLeftovers(ctx, eng); err != nil {
		eng.Close()
		return nil, nil, err
	}
	if err := l.refuseLive(ctx, eng, l.Config.Container); err != nil {
		eng.Close()
		return nil, nil, err
	}
	imageID, tlsConf, err := l.currentImage(ctx, eng)
	if err != nil {
		eng.Close()
		return nil, nil, err
	}
	clock, err := eng.MeasureClock(ctx)
	if err != nil {
		eng.Close()
		return nil, nil, err
	}
	if !clock.Local {
		l.printf("engine clock: %+.1f ms from ours, ± %.1f ms\n", msOf(clock.Offset), msOf(clock.Uncertainty))
	}
	return &dockerBed{l: l, eng: eng, imageID: imageID, tls: tlsConf, clk: clock}, tlsConf, nil
}

// dockerBed runs the broker as a container.
type dockerBed struct {
	l       *Lab
	eng     *broker.Engine
	imageID string
	tls     *tls.Config
	clk     broker.Clock
	spec    broker.RunSpec
	c       *broker.Container
	held    *synsent.Watch // nil unless the engine is on this Linux host
	targets brokerAddrs
	runID   int64
}

// brokerAddrs are the broker container's addresses on its Docker network
// during a run (a plain container may come back at another one).
type brokerAddrs struct {
	mu    sync.Mutex
	addrs []netip.AddrPort
}

func (b *brokerAddrs) add(ip netip.Addr) {
	if !ip.IsValid() {
		return
	}
	a := netip.AddrPortFrom(ip, broker.MQTTPort)
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Contains(b.addrs, a) {
		b.addrs = append(b.addrs, a)
	}
}

func (b *brokerAddrs) list() []netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.addrs)
}

func (b *dockerBed) describe(r *store.Run) {
	r.Broker, r.NetNS = "docker", b.l.Config.NetNS
	r.EngineVersion, r.ImageID = b.eng.Version(), b.imageID
	r.ClockOffset, r.ClockError = b.clk.Offset, b.clk.Uncertainty
}

func (b *dockerBed) close() { b.eng.Close() }

func (b *dockerBed) start(ctx context.Context, runID int64, env []string, observe func(brokerlog.Event), cleanup *cleanups) (time.Duration, error) {
	cfg := b.l.Config
	b.runID = runID
	b.spec = broker.RunSpec{
		// The image by the id the run resolved, not by its tag: a broker
		// the run recreates is the same image, whatever another run or
		// checkout built under the tag since.
		Name: cfg.Container, Image: b.imageID, Bind: cfg.Bind, Port: cfg.Port,
		Labels: runLabels(runID), NetNS: cfg.NetNS, Env: env,
	}
	c, err := b.eng.Run(ctx, b.spec)
	if err != nil {
		return 0, err
	}
	b.c = c
	cleanup.addBounded(func(cctx context.Context) {
		err := b.eng.Discard(cctx, cfg.Container)
		var na *broker.NoAnswerError
		switch {
		case errors.As(err, &na):
			b.l.printf("cleanup: %v: it removes containers %s and %s once it answers again; should it not, the next `mage mttr`, or `mage down`, does\n",
				na, cfg.Container, broker.HolderName(cfg.Container))
		case err != nil:
			b.l.printf("cleanup: %v\n", err)
		}
	})
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	cleanup.add(stop)
	go b.l.followBroker(fctx, b.eng, c.StartedAt, b.clk, observe)
	// docker-proxy's connections to the broker wait in SYN-SENT when the
	// path holds them, which it can only in some modes and faults; an
	// engine elsewhere hides them.
	b.targets.add(c.IP)
	if b.clk.Local && broker.PathCanHold(cfg.NetNS, cfg.Fault) {
		if w, err := synsent.Start(fctx, b.targets.list); err == nil {
			w.Active(false) // the experiment watches each cycle from its fault on
			b.held = w
			cleanup.add(func() { _ = w.Stop() })
		} else {
			b.l.printf("note: held_until_at is not recorded (a stall of Docker's path would count as the client's recovery): %v\n", err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	ready, err := b.eng.WaitReady(rctx, c, cfg.BrokerAddr, b.tls, mqttprobe.ProbeInterval)
	if err != nil {
		return 0, notReady(ctx, cfg.ReadyTimeout, err)
	}
	return ready.Sub(c.StartedAt), nil
}

func (b *dockerBed) fault(ctx context.Context, cleanup *cleanups, addr string, dial netfault.Dial) (mttr.Fault, error) {
	o, err := b.eng.NewOutage(ctx, b.l.Config.Fault, b.c, b.spec, addr, b.tls)
	if err != nil {
		return nil, err
	}
	o.Dial = dial
	cleanup.add(o.Close)
	return followedOutage{o, &b.targets}, nil
}

func (b *dockerBed) waitReady(ctx context.Context, addr string, dial netfault.Dial) (time.Time, error) {
	return b.eng.WaitReadyVia(ctx, b.c, dial, addr, b.tls, mqttprobe.ProbeInterval)
}

// direct is the broker's address on its Docker network, which this
// machine reaches when the engine runs on it.
func (b *dockerBed) direct() (string, error) {
	switch {
	case !b.clk.Local:
		return "", fmt.Errorf("the broker's own address is on the Docker engine's machine (DOCKER_HOST=%s): "+
			"%s needs an engine on this machine, or MTTR_BROKER_ADDR set to an address that reaches the broker with no proxy between",
			b.eng.Host(), b.l.netCause())
	case !b.c.IP.IsValid():
		return "", fmt.Errorf("container %s has no address on a Docker network", b.c.Name)
	}
	return netip.AddrPortFrom(b.c.IP, broker.MQTTPort).String(), nil
}

func (b *dockerBed) netfilter(ctx context.Context, cleanup *cleanups) (*broker.Netfilter, error) {
	cfg := b.l.Config
	if err := b.eng.MakeNetfilterImage(ctx, cfg.NetfilterImage, b.l.Out); err != nil {
		return nil, fmt.Errorf("%w (MTTR_NETFILTER_IMAGE)", err)
	}
	f, err := b.eng.RunNetfilter(ctx, b.c, cfg.NetfilterImage, runLabels(b.runID))
	if err != nil {
		return nil, err
	}
	// Discard, registered by start, removes it with the broker.
	return f, nil
}

func (b *dockerBed) readdress(ctx context.Context) (*broker.Readdress, error) {
	if !b.clk.Local {
		return nil, fmt.Errorf("MTTR_FAULT=%s: the broker's new addresses are on the Docker engine's machine (DOCKER_HOST=%s): it needs an engine on this machine", netfault.Readdress, b.eng.Host())
	}
	// Discard, registered by start, removes it with the broker.
	return b.eng.NewReaddress(ctx, b.c, runLabels(b.runID))
}

func (b *dockerBed) path() mttr.HeldPath {
	if b.held == nil {
		return nil
	}
	return b.held
}

func (b *dockerBed) brokerCPU(ctx context.Context) (time.Time, time.Duration, bool) {
	started, used, err := b.eng.CPU(ctx, b.l.Config.Container)
	return started, used, err == nil && !started.IsZero()
}

// followedOutage tells the path watch where the broker is after each heal.
type followedOutage struct {
	*broker.Outage
	targets *brokerAddrs
}

func (f followedOutage) Heal(ctx context.Context) (time.Time, error) {
	at, err := f.Outage.Heal(ctx)
	if c := f.Outage.Container(); c != nil {
		f.targets.add(c.IP)
	}
	return at, err
}

// openProcessBed installs the broker's sources for the local node and
// makes the certificate it serves.
func (l *Lab) openProcessBed(ctx context.Context) (testBed, *tls.Config, error) {
	hc, err := l.cert(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	cache, err := localbroker.DefaultCacheRoot()
	if err != nil {
		return nil, nil, err
	}
	app, err := localbroker.Prepare(ctx, l.BuildDir, cache, l.Out)
	if err != nil {
		return nil, nil, err
	}
	tlsConf := hc.trust(l.Config.Host)
	return &processBed{l: l, app: app, cert: hc, tls: tlsConf}, tlsConf, nil
}

// processBed runs the broker as a local Node process.
type processBed struct {
	l    *Lab
	app  string
	cert hostCert
	tls  *tls.Config
	b    *localbroker.Broker
}

func (p *processBed) describe(r *store.Run) { r.Broker, r.NetNS = "process", "" }

func (p *processBed) close() {}

func (p *processBed) brokerCPU(context.Context) (time.Time, time.Duration, bool) {
	pgid, started := p.b.Group()
	if pgid == 0 {
		return time.Time{}, 0, false
	}
	return started, bedcost.Groups([]int{pgid}), true
}

func (p *processBed) start(ctx context.Context, _ int64, env []string, observe func(brokerlog.Event), cleanup *cleanups) (time.Duration, error) {
	cfg := p.l.Config
	bind, err := netip.ParseAddr(cfg.Bind)
	if err != nil {
		return 0, fmt.Errorf("MTTR_BIND=%q: %w", cfg.Bind, err)
	}
	b, err := localbroker.Start(ctx, localbroker.Spec{
		AppDir: p.app, Addr: net.JoinHostPort(cfg.Bind, strconv.Itoa(cfg.Port)), AllowNonLoopback: !bind.IsLoopback(),
		CertFile: p.cert.pair.CertPath, KeyFile: p.cert.pair.KeyPath, Env: env, Events: observe,
	})
	if err != nil {
		return 0, err
	}
	p.b = b
	cleanup.add(func() {
		if err := b.Close(); err != nil {
			p.l.printf("cleanup: %v\n", err)
		}
	})
	rctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	ready, err := b.WaitReady(rctx, p.tls, mqttprobe.ProbeInterval)
	if err != nil {
		return 0, notReady(ctx, cfg.ReadyTimeout, err)
	}
	return ready.Sub(b.StartedAt()), nil
}

// path is nil: a local process has no path of Docker's to hold anything.
func (p *processBed) path() mttr.HeldPath { return nil }

// fault probes the process's own address: nothing filters its path.
func (p *processBed) fault(context.Context, *cleanups, string, netfault.Dial) (mttr.Fault, error) {
	return p.b.Outage(p.l.Config.Fault, p.tls)
}

func (p *processBed) waitReady(ctx context.Context, _ string, _ netfault.Dial) (time.Time, error) {
	return p.b.WaitReady(ctx, p.tls, mqttprobe.ProbeInterval)
}

// direct is the process's own address: nothing stands between.
func (p *processBed) direct() (string, error) { return p.b.Addr(), nil }

func (p *processBed) netfilter(context.Context, *cleanups) (*broker.Netfilter, error) {
	return nil, fmt.Errorf("MTTR_FAULT=%s: %w", p.l.Config.Fault, netfault.ErrNoFilter)
}

func (p *processBed) readdress(context.Context) (*broker.Readdress, error) {
	return nil, fmt.Errorf("MTTR_FAULT=%s: needs Docker (MTTR_BROKER=docker), whose networks give the broker new addresses", netfault.Readdress)
}

// notReady says why a new broker did not answer: the run was interrupted
// while it started, or it did not answer within MTTR_READY_TIMEOUT.
func notReady(ctx context.Context, timeout time.Duration, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted while the broker started: %w", mttr.ErrInterrupted)
	}
	return fmt.Errorf("broker not ready within %s (MTTR_READY_TIMEOUT): %w", timeout, err)
}

// followBroker feeds the broker's event log to observe until ctx ends, following
// the container again each time the engine starts it (after a stop, kill,
// restart or recreate). Broker times are moved onto our clock when the
// engine is on another machine.
func (l *Lab) followBroker(ctx context.Context, eng *broker.Engine, since time.Time, clock broker.Clock, observe func(brokerlog.Event)) {
	lines, last := brokerLines(clock, observe)
	name := l.Config.Container
	for {
		err := eng.FollowLogs(ctx, name, since, lines)
		if ctx.Err() != nil {
			return
		}
		ended := time.Now().Add(clock.Offset - 100*time.Millisecond)
		if err != nil {
			ended = ended.Add(-time.Second) // the container may be between remove and run
		}
		if _, err := eng.WaitStarted(ctx, name, ended); err != nil {
			return
		}
		if l := last(); !l.IsZero() {
			since = l
		}
	}
}

// brokerLines splits the broker's log stream into events for observe, on
// our clock. Following the log again after a restart starts a little early,
// so a line the engine stamped no later than the newest one seen is a
// repeat and skipped (by the engine's stamp: At may be the broker's own
// millisecond, equal for several lines). last is the newest engine stamp.
func brokerLines(clock broker.Clock, observe func(brokerlog.Event)) (lines *brokerlog.Lines, last func() time.Time) {
	var mu sync.Mutex
	var newest time.Time
	lines = brokerlog.NewLines(64<<10, func(b []byte) {
		e, ok := brokerlog.Parse(b)
		mu.Lock()
		if !ok || !e.EngineAt.After(newest) {
			mu.Unlock()
			return
		}
		newest = e.EngineAt
		mu.Unlock()
		if !clock.Local {
			e.At = e.At.Add(-clock.Offset)
		}
		observe(e)
	})
	return lines, func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return newest
	}
}
