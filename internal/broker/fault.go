package broker

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/mttrlab/mttr/internal/mqttprobe"
	"github.com/mttrlab/mttr/internal/netfault"
)

// Fault modes, as MTTR_FAULT names them. All act on the broker container
// only, except disconnect, which detaches whoever owns the network
// namespace: the holder in NetNSHolder mode, the broker in NetNSPlain mode.
const (
	FaultStop       = "stop"       // graceful stop (SIGTERM), start the same container
	FaultKill       = "kill"       // SIGKILL, start the same container
	FaultRestart    = "restart"    // the engine's restart: stop and start in one call
	FaultRecreate   = "recreate"   // stop, remove, run a new container (in the same holder)
	FaultPause      = "pause"      // freeze the processes; TCP connections stay open
	FaultDisconnect = "disconnect" // detach the network namespace from its network
)

// stopGrace is how long a stop waits for the broker to exit after SIGTERM
// before the engine sends SIGKILL. The broker exits within 2 s of SIGTERM
// on its own (aedes/server.js).
const stopGrace = 5 * time.Second

// eventWait is how long to wait for the engine's event after an API call
// before falling back to the call's own end time.
const eventWait = 3 * time.Second

// Outage takes our broker container away in one way and brings it back,
// taking the moment a fault took effect from the engine's events where the
// engine reports one. It implements mttr.Fault.
type Outage struct {
	// Dial opens the readiness probe's connections; nil: from any local
	// port.
	Dial netfault.Dial

	eng      *Engine
	mode     string
	spec     RunSpec
	addr     string
	tls      *tls.Config
	c        *Container
	network  string // disconnect: the network netOwner is detached from
	netOwner string // disconnect: the container that owns the namespace
	events   <-chan events.Message
	stop     context.CancelFunc
	healed   time.Time // for restart: when the engine started it again
}

// PathCanHold reports whether Docker's path to a broker in netns mode can
// hold a client's connection under fault: leave docker-proxy's SYN to the
// broker's address unanswered although the broker listens. A holder keeps
// the address, the interface and the neighbour entry across every fault
// but disconnect, which takes the interface away; a plain container takes
// them with it. Measured with a client connecting every 100 ms, 10 cycles
// each (the path watch's held_until_at): holder with stop, kill, restart,
// recreate and pause, 0 cycles held; holder with disconnect, 1; plain with
// stop, 7; plain with kill, 8.
func PathCanHold(netns, fault string) bool {
	return netns == NetNSPlain || fault == FaultDisconnect
}

// NewOutage prepares faults of mode against container c (run from spec),
// probing readiness at addr with tlsConf. Close it when done.
func (e *Engine) NewOutage(ctx context.Context, mode string, c *Container, spec RunSpec, addr string, tlsConf *tls.Config) (*Outage, error) {
	switch mode {
	case FaultStop, FaultKill, FaultRestart, FaultRecreate, FaultPause, FaultDisconnect:
	default:
		return nil, fmt.Errorf("fault %q: unknown", mode)
	}
	o := &Outage{eng: e, mode: mode, spec: spec, addr: addr, tls: tlsConf, c: c}
	if mode == FaultDisconnect {
		o.netOwner = c.ID
		if c.NetNS == NetNSHolder {
			o.netOwner = c.HolderID
		}
		res, err := e.containerInspect(ctx, o.netOwner)
		if err != nil {
			return nil, fmt.Errorf("fault %s: %w", mode, err)
		}
		if ns := res.Container.NetworkSettings; ns != nil {
			for name := range ns.Networks {
				o.network = name
				break
			}
		}
		if o.network == "" {
			return nil, fmt.Errorf("fault %s: container %s is on no network", mode, o.netOwner)
		}
	}
	ectx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	o.stop = cancel
	since := c.StartedAt
	if since.IsZero() {
		since = time.Now()
	}
	o.events = e.cli.Events(ectx, client.EventsListOptions{
		Since:   fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		Filters: make(client.Filters).Add("type", "container").Add("container", spec.Name),
	}).Messages
	return o, nil
}

// Close stops following the engine's events.
func (o *Outage) Close() { o.stop() }

// Instant reports whether Inject also heals (restart).
func (o *Outage) Instant() bool { return o.mode == FaultRestart }

// Inject takes the broker away and returns when that took effect: the
// engine's kill, die or pause event, or the end of the API call.
func (o *Outage) Inject(ctx context.Context) (time.Time, error) {
	e, id := o.eng, o.c.ID
	var err error
	var want []string
	begin := time.Now()
	switch o.mode {
	case FaultStop:
		want = []string{"kill", "die"}
		err = e.containerStop(ctx, id, stopGrace)
	case FaultKill:
		want = []string{"kill", "die"}
		err = e.containerKill(ctx, id, "SIGKILL")
	case FaultRestart:
		want = []string{"kill", "die"}
		err = e.containerRestart(ctx, id, stopGrace)
	case FaultRecreate:
		want = []string{"kill", "die"}
		if err = e.containerStop(ctx, id, stopGrace); err == nil {
			err = e.containerRemove(ctx, id, false)
		}
	case FaultPause:
		want = []string{"pause"}
		err = e.containerPause(ctx, id)
	case FaultDisconnect:
		err = e.networkDisconnect(ctx, o.network, o.netOwner)
	}
	end := time.Now()
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %s: %w", o.mode, o.c.Name, e.gone(ctx, "the fault", err))
	}
	at := o.await(ctx, want, begin, end)
	if o.mode == FaultDisconnect {
		// The engine cuts the connections while the call is still running and
		// reports its event only at the end: the call's start is closer.
		at = begin
	}
	if o.mode == FaultRestart {
		o.healed = o.await(ctx, []string{"start"}, begin, time.Now())
	}
	return at, nil
}

// Heal brings the broker back and returns when the call that did so
// returned (for restart: when the engine reported the start). Recreate
// runs the new broker in the same holder in NetNSHolder mode, so its
// address stays; in NetNSPlain mode it may get another one.
func (o *Outage) Heal(ctx context.Context) (time.Time, error) {
	e, id := o.eng, o.c.ID
	var err error
	switch o.mode {
	case FaultStop, FaultKill:
		err = e.containerStart(ctx, id)
	case FaultRestart:
		return o.healed, o.refresh(ctx, id)
	case FaultRecreate:
		spec := o.spec
		spec.Name, spec.NetNS = o.c.Name, o.c.NetNS
		var c *Container
		if o.c.NetNS == NetNSHolder {
			c, err = o.eng.joinHolder(ctx, spec, o.c.HolderID)
		} else {
			c, err = o.eng.Run(ctx, spec)
		}
		if err == nil {
			o.c = c
			return c.StartReturned, nil
		}
	case FaultPause:
		err = e.containerUnpause(ctx, id)
	case FaultDisconnect:
		err = e.networkConnect(ctx, o.network, o.netOwner)
	}
	at := time.Now()
	if err != nil {
		return time.Time{}, fmt.Errorf("heal %s %s: %w", o.mode, o.c.Name, e.gone(ctx, "heal", err))
	}
	return at, o.refresh(ctx, id)
}

// Container is the broker container as of the last Inject or Heal.
func (o *Outage) Container() *Container { return o.c }

// refresh re-reads the container after a heal (new start time; the port,
// from the holder in NetNSHolder mode).
func (o *Outage) refresh(ctx context.Context, id string) error {
	c, err := o.eng.inspect(ctx, id)
	if err != nil {
		return fmt.Errorf("heal %s: %w", o.mode, err)
	}
	o.c = c
	return nil
}

// Ready waits until the broker answers an MQTT CONNECT over verified TLS,
// probing every ProbeInterval, and fails at once if the container dies.
func (o *Outage) Ready(ctx context.Context) (time.Time, error) {
	return o.eng.WaitReadyVia(ctx, o.c, o.Dial, o.addr, o.tls, mqttprobe.ProbeInterval)
}

// await returns the time of the next engine event with one of the actions
// that happened after since, or fallback when none arrives within eventWait.
func (o *Outage) await(ctx context.Context, actions []string, since, fallback time.Time) time.Time {
	if len(actions) == 0 {
		return fallback
	}
	t := time.NewTimer(eventWait)
	defer t.Stop()
	for {
		select {
		case m, ok := <-o.events:
			if !ok {
				return fallback
			}
			// The engine's name filter also matches names that merely
			// begin with it, such as the holder's <name>-netns.
			if m.Actor.Attributes["name"] == o.c.Name && slices.Contains(actions, string(m.Action)) && m.TimeNano >= since.UnixNano() {
				return time.Unix(0, m.TimeNano)
			}
		case <-t.C:
			return fallback
		case <-ctx.Done():
			return fallback
		}
	}
}
