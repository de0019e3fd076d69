package lab

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/link"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/netfault"
)

// netCause names the settings that make a run networked, for errors.
func (l *Lab) netCause() string {
	if netfault.Is(l.Config.Fault) {
		return "MTTR_FAULT=" + l.Config.Fault
	}
	return "MTTR_LINK=" + l.Config.Link.String()
}

// networked reports whether the run changes the path between the devices
// and the broker: a network fault, or a link for the whole run.
func (l *Lab) networked() bool {
	return netfault.Is(l.Config.Fault) || l.Config.Link != (netfault.Link{})
}

// netPath is how the devices reach the broker in a networked run.
//   - direct: the broker's own address, with no proxy of Docker's between,
//     so that rules in its namespace act on the devices' own connections;
//   - the netfilter helper in that namespace, when rules are needed;
//   - the link, listening on loopback and forwarding to direct, when the
//     path delays or slows: devices dial it.
type netPath struct {
	direct string
	filter *broker.Netfilter
	link   *link.Link
	base   netfault.Link
	// own are the local ports the tool's own clients dial from where rules
	// act: the rules leave them alone (zero without rules).
	own netfault.Ports
	// idle is the path's idle timeout for the whole run (the idle fault).
	idle time.Duration
	// moved is the broker's network of the readdress fault, where each
	// heal gives it a new address, and hosts is the file that answers
	// netfault.BrokerName, the name the devices dial, with it.
	moved *broker.Readdress
	hosts *netfault.Hosts
}

// deviceDial is how the devices open their TCP connections: nil (the
// default) but in a readdress run, where they look the broker's name up
// in the run's hosts file at every dial.
func (p *netPath) deviceDial() netfault.Dial {
	if p == nil || p.hosts == nil {
		return nil
	}
	return p.hosts.Dial(nil)
}

// dialOwn opens a connection of the tool's own (verifier, sender of
// commands, readiness probe) to the broker, past the fault.
func (p *netPath) dialOwn(ctx context.Context, d net.Dialer, network, addr string) (net.Conn, error) {
	return p.own.Dial(ctx, d, network, addr)
}

// dial is where the devices dial.
func (p *netPath) dial() string {
	switch {
	case p.link != nil:
		return p.link.Addr()
	case p.hosts != nil: // on the readdress network, at the broker's own port
		return net.JoinHostPort(p.hosts.Name(), strconv.Itoa(broker.MQTTPort))
	}
	return p.direct
}

// port is the broker's port as rules in its namespace see it.
func (p *netPath) port() int {
	_, port, _ := net.SplitHostPort(p.direct)
	n, _ := strconv.Atoi(port)
	return n
}

// openNetPath prepares the path of a networked run to the broker bed
// started: the helper and the link's base rules and toxics. What it
// starts, cleanup stops.
func (l *Lab) openNetPath(ctx context.Context, bed testBed, cleanup *cleanups) (*netPath, error) {
	cfg := l.Config
	direct := cfg.BrokerAddr
	if cfg.BrokerAddrPublished() {
		var err error
		if direct, err = bed.direct(); err != nil {
			return nil, err
		}
	}
	p := &netPath{direct: direct, base: cfg.Link}
	if cfg.Fault == netfault.Idle {
		p.idle = cfg.IdleTimeout
	}
	if netfault.Filtered(cfg.Fault) || cfg.Link.Loss > 0 {
		own, err := netfault.OwnPorts()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", l.netCause(), err)
		}
		f, err := bed.netfilter(ctx, cleanup)
		if err != nil {
			return nil, err
		}
		p.filter, p.own = f, own
		if cfg.Link.Loss > 0 || p.idle > 0 {
			if _, err := f.Apply(ctx, p.rules(netfault.Filter{}).Script(p.port())); err != nil {
				return nil, err
			}
		}
	}
	if cfg.Fault == netfault.Readdress {
		r, err := bed.readdress(ctx)
		if err != nil {
			return nil, err
		}
		h, err := netfault.NewHosts("", netfault.BrokerName, r.Addr())
		if err != nil {
			return nil, err
		}
		cleanup.add(func() { h.Close() })
		p.moved, p.hosts = r, h
	}
	if netfault.Linked(cfg.Fault) || cfg.Link.Delays() {
		lk, err := link.Start("127.0.0.1:0", direct, cfg.Link)
		if err != nil {
			return nil, err
		}
		cleanup.add(lk.Close)
		p.link = lk
	}
	how := "straight to the broker's address " + direct
	switch {
	case p.link != nil:
		how = fmt.Sprintf("through the link %s to %s", p.link.Addr(), direct)
	case p.hosts != nil:
		how = fmt.Sprintf("%s, which %s answers with %s, the broker's address on network %s", p.dial(), p.hosts.Path(), p.moved.Addr(), broker.ReaddressName(cfg.Container))
	}
	if s := cfg.Link.String(); s != "" {
		how += ", link " + s
	}
	l.printf("devices dial %s\n", how)
	return p, nil
}

// rules is f on top of the whole run's link, for the devices alone.
func (p *netPath) rules(f netfault.Filter) netfault.Filter {
	f.Own, f.Idle = p.own, p.idle
	if p.base.Loss > 0 {
		f.Loss = append([]float64{p.base.Loss}, f.Loss...)
	}
	return f
}

// netOutage is a network fault: the broker keeps running, and what lies
// between it and the devices changes. It implements mttr.Fault.
type netOutage struct {
	path   *netPath
	fault  string
	window netfault.Link // latency, jitter, loss or rate of the fault
	ready  func(ctx context.Context) (time.Time, error)
	quiet  func(bool) // our devices' silence (idle); nil for external clients
}

// newNetOutage prepares MTTR_FAULT, a network fault, on path; ready probes
// the broker at its own address from the tool's own ports: past the fault
// and without the link's delays.
func (l *Lab) newNetOutage(path *netPath, quiet func(bool), ready func(context.Context) (time.Time, error)) *netOutage {
	cfg := l.Config
	o := &netOutage{path: path, fault: cfg.Fault, ready: ready, quiet: quiet}
	switch cfg.Fault {
	case netfault.Loss:
		o.window.Loss = cfg.Loss
	case netfault.Latency:
		o.window.Latency, o.window.Jitter = cfg.Latency, cfg.Jitter
	case netfault.Bandwidth:
		o.window.Rate = cfg.Rate
	}
	return o
}

// Inject starts the fault and returns when it took effect: for rules, once
// nft had applied them (no device can notice a drop sooner); for reset,
// when a connection of our own to the broker, idle beside the devices',
// got its RST (ss destroys them all at once, each sending its peer a RST);
// for the link, once its toxics are in place; for idle, whose rules hold
// for the whole run, the devices fall silent, and the path drops their
// flows from an idle timeout later.
func (o *netOutage) Inject(ctx context.Context) (time.Time, error) {
	p := o.path
	switch o.fault {
	case netfault.Blackhole:
		return p.filter.Apply(ctx, p.rules(netfault.Filter{Blackhole: true}).Script(p.port()))
	case netfault.Loss:
		return p.filter.Apply(ctx, p.rules(netfault.Filter{Loss: []float64{o.window.Loss}}).Script(p.port()))
	case netfault.Reset:
		rst, err := watchReset(ctx, p.direct)
		if err != nil {
			return time.Time{}, err
		}
		defer rst.close()
		if _, err := p.filter.Apply(ctx, p.rules(netfault.Filter{Reset: true}).Script(p.port())); err != nil {
			return time.Time{}, err
		}
		if err := p.filter.Abort(ctx, p.port(), p.own); err != nil {
			return time.Time{}, err
		}
		return rst.wait(ctx)
	case netfault.Idle:
		if o.quiet != nil {
			o.quiet(true)
		}
		return time.Now().Add(p.idle), nil
	case netfault.Readdress:
		// The engine cuts the connections while the call runs: its start is
		// closer than its end.
		at := time.Now()
		if err := p.moved.Detach(ctx); err != nil {
			return time.Time{}, err
		}
		return at, nil
	case netfault.Latency, netfault.Bandwidth:
		if err := p.link.Fault(o.window); err != nil {
			return time.Time{}, err
		}
		return time.Now(), nil
	}
	return time.Time{}, fmt.Errorf("fault %s: not a network fault", o.fault)
}

// resetWatch is a TCP connection of ours to the broker, idle, that
// notices the moment a reset reaches it, as a device's would.
type resetWatch struct {
	conn net.Conn
	at   chan time.Time
}

// watchReset connects to addr and watches for the connection's end.
func watchReset(ctx context.Context, addr string) (*resetWatch, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("reset: connect to %s: %w", addr, err)
	}
	w := &resetWatch{conn: conn, at: make(chan time.Time, 1)}
	go func() {
		var b [1]byte
		conn.Read(b[:]) // it sends nothing: this returns when the connection ends
		w.at <- time.Now()
	}()
	return w, nil
}

// wait returns when the connection ended, at most resetSeen from now.
func (w *resetWatch) wait(ctx context.Context) (time.Time, error) {
	t := time.NewTimer(resetSeen)
	defer t.Stop()
	select {
	case at := <-w.at:
		return at, nil
	case <-t.C:
		return time.Time{}, fmt.Errorf("reset: a connection to the broker was not reset within %s", resetSeen)
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

func (w *resetWatch) close() { w.conn.Close() }

// resetSeen bounds how long after ss returned a reset may reach us.
const resetSeen = 2 * time.Second

// Heal ends the fault and returns when that took effect.
func (o *netOutage) Heal(ctx context.Context) (time.Time, error) {
	p := o.path
	if o.fault == netfault.Idle { // the devices speak again; dead flows stay dead
		if o.quiet != nil {
			o.quiet(false)
		}
		return time.Now(), nil
	}
	if o.fault == netfault.Readdress { // back at a new address, which the name now answers
		a, err := p.moved.Attach(ctx)
		if err == nil {
			err = p.hosts.Set(a)
		}
		if err != nil {
			return time.Time{}, fmt.Errorf("heal %s: %w", o.fault, err)
		}
		return time.Now(), nil
	}
	if netfault.Filtered(o.fault) {
		end, err := p.filter.Apply(ctx, p.rules(netfault.Filter{}).Script(p.port()))
		if err != nil {
			return time.Time{}, fmt.Errorf("heal %s: %w", o.fault, err)
		}
		return end, nil
	}
	if err := p.link.Heal(ctx); err != nil {
		return time.Time{}, fmt.Errorf("heal %s: %w", o.fault, err)
	}
	return time.Now(), nil
}

// Ready waits until the broker answers an MQTT CONNECT at the devices'
// address.
func (o *netOutage) Ready(ctx context.Context) (time.Time, error) { return o.ready(ctx) }

// Address is where the devices reach the broker since the last heal: for
// readdress, its new address; "" for the other faults, where it stays.
func (o *netOutage) Address() string {
	if o.path.moved == nil {
		return ""
	}
	return o.path.moved.Addr().String()
}

var (
	_ mttr.Fault     = (*netOutage)(nil)
	_ mttr.Addressed = (*netOutage)(nil)
)
