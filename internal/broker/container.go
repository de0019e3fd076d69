package broker

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/mttrlab/mttr/internal/mqttprobe"
	"github.com/mttrlab/mttr/internal/netfault"
)

// MQTTPort is the broker's port inside the container.
const MQTTPort = 8883

// Network namespace modes, as RunSpec.NetNS names them.
const (
	// NetNSHolder keeps the broker's network namespace in a long-lived
	// holder container, <name>-netns, that owns the published port; the
	// broker container joins it. Faults that stop, restart or recreate the
	// broker leave the address, the veth and the engine's port proxy alone,
	// as a Kubernetes pod sandbox does.
	NetNSHolder = "holder"
	// NetNSPlain is plain Docker: the broker container owns its network
	// namespace and its published port, and loses both when it stops.
	NetNSPlain = "plain"
)

// NetNSModes lists the valid RunSpec.NetNS values, the default first.
var NetNSModes = []string{NetNSHolder, NetNSPlain}

// holderSuffix names the holder after its broker: <name>-netns.
const holderSuffix = "-netns"

// HolderName is the name of the network namespace holder of broker
// container name.
func HolderName(name string) string { return name + holderSuffix }

// holderCmd keeps the holder alive doing nothing; node is in the image.
var holderCmd = []string{"node", "-e", "setInterval(() => {}, 2 ** 30)"}

// RunSpec describes a broker container.
type RunSpec struct {
	Name  string // container name, e.g. expecto-patronum
	Image string // image tag, e.g. mqtt-broker
	Bind  string // host address the port is published on, e.g. 127.0.0.1
	Port  int    // host port; 0 lets the engine pick a free one
	// NetNS is who owns the broker's network namespace and published
	// port: NetNSHolder (when empty) or NetNSPlain.
	NetNS string
	// Env is added to the broker container's environment, e.g.
	// MQTT_VERIFIER_ID=devicemtr-verifier.
	Env []string
	// Labels are added to the container's, e.g. the run it belongs to.
	Labels map[string]string
}

// netNS returns spec.NetNS with the default applied, or an error naming
// an unknown mode.
func (spec RunSpec) netNS() (string, error) {
	switch spec.NetNS {
	case "", NetNSHolder:
		return NetNSHolder, nil
	case NetNSPlain:
		return NetNSPlain, nil
	}
	return "", fmt.Errorf("network namespace mode %q: want one of %s", spec.NetNS, strings.Join(NetNSModes, ", "))
}

// Container is a running broker container.
type Container struct {
	ID    string
	Name  string
	NetNS string // NetNSHolder or NetNSPlain
	// HolderID and HolderName name the container that owns the network
	// namespace and the published port (NetNSHolder only).
	HolderID, HolderName string
	Bind                 string
	Port                 int               // host port the broker is published on
	IP                   netip.Addr        // the broker's address on its Docker network (the holder's); invalid when it has none
	Labels               map[string]string // the broker container's labels
	StartedAt            time.Time         // when the engine started the broker
	// StartReturned is when our start call returned (zero for a container
	// found rather than started).
	StartReturned time.Time
}

// Addr is the published address, bind:port.
func (c *Container) Addr() string { return net.JoinHostPort(c.Bind, strconv.Itoa(c.Port)) }

var mqttPort = network.MustParsePort(strconv.Itoa(MQTTPort) + "/tcp")

// Run starts a fresh broker container from spec and, in NetNSHolder mode,
// its network namespace holder first. A previous container of ours with
// the same name is removed first, with its holder; one that is not ours
// (the broker's name or the holder's) is refused. What Run created is
// removed again when it cannot be started.
func (e *Engine) Run(ctx context.Context, spec RunSpec) (*Container, error) {
	mode, err := spec.netNS()
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", spec.Name, err)
	}
	bind, err := netip.ParseAddr(spec.Bind)
	if err != nil {
		return nil, fmt.Errorf("run %s: bind address %q: %w", spec.Name, spec.Bind, err)
	}
	if _, err := e.InspectImage(ctx, spec.Image); err != nil {
		return nil, fmt.Errorf("run %s: %w: build it with `mage image`", spec.Name, err)
	}
	if err := e.Remove(ctx, spec.Name); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("run %s: %w", spec.Name, err)
	}
	hostPort := ""
	if spec.Port != 0 {
		hostPort = strconv.Itoa(spec.Port)
	}
	ports := network.PortMap{mqttPort: {{HostIP: bind, HostPort: hostPort}}}
	if mode == NetNSPlain {
		return e.start(ctx, spec, &container.HostConfig{PortBindings: ports}, "")
	}

	holder, err := e.containerCreate(ctx, client.ContainerCreateOptions{
		Name: HolderName(spec.Name),
		Config: &container.Config{
			Image:        spec.Image,
			Cmd:          holderCmd,
			Labels:       labels(spec, RoleNetNS),
			ExposedPorts: network.PortSet{mqttPort: {}},
			StopSignal:   "SIGKILL", // it holds no state worth a graceful stop
		},
		HostConfig: &container.HostConfig{PortBindings: ports},
	})
	if err != nil {
		return nil, fmt.Errorf("run %s: create network holder: %w", spec.Name, err)
	}
	if err := e.containerStart(ctx, holder.ID); err != nil {
		e.discard(ctx, holder.ID)
		return nil, startError(spec, "start network holder", err)
	}
	c, err := e.start(ctx, spec, &container.HostConfig{NetworkMode: container.NetworkMode("container:" + holder.ID)}, holder.ID)
	if err != nil {
		e.discard(ctx, holder.ID)
		return nil, err
	}
	return c, nil
}

// joinHolder runs a new broker container from spec in the network
// namespace of the running holder holderID, which it leaves alone.
func (e *Engine) joinHolder(ctx context.Context, spec RunSpec, holderID string) (*Container, error) {
	if info, err := e.own(ctx, spec.Name); err == nil {
		if err := e.containerRemove(ctx, info.ID, true); err != nil && !cerrdefs.IsNotFound(err) {
			return nil, fmt.Errorf("run %s: remove the earlier broker: %w", spec.Name, err)
		}
	} else if !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("run %s: %w", spec.Name, err)
	}
	return e.start(ctx, spec, &container.HostConfig{NetworkMode: container.NetworkMode("container:" + holderID)}, holderID)
}

// start creates and starts the broker container of spec with host (its
// own port bindings, or a holder's network namespace), removes it again
// when that fails, and returns it inspected.
func (e *Engine) start(ctx context.Context, spec RunSpec, host *container.HostConfig, holderID string) (*Container, error) {
	cfg := &container.Config{Image: spec.Image, Env: spec.Env, Labels: labels(spec, RoleBroker)}
	if holderID == "" {
		cfg.ExposedPorts = network.PortSet{mqttPort: {}}
	}
	created, err := e.containerCreate(ctx, client.ContainerCreateOptions{Name: spec.Name, Config: cfg, HostConfig: host})
	if err != nil {
		return nil, fmt.Errorf("run %s: create: %w", spec.Name, err)
	}
	if err := e.containerStart(ctx, created.ID); err != nil {
		e.discard(ctx, created.ID)
		return nil, startError(spec, "start", err)
	}
	started := time.Now()
	c, err := e.inspect(ctx, created.ID)
	if err != nil {
		// Started but unreadable: do not leave it running.
		e.discard(ctx, created.ID)
		return nil, fmt.Errorf("run %s: %w", spec.Name, err)
	}
	c.StartReturned = started
	return c, nil
}

// labels are the labels of a container of spec with role.
func labels(spec RunSpec, role string) map[string]string {
	l := map[string]string{LabelManaged: "true"}
	maps.Copy(l, spec.Labels)
	l[LabelRole] = role
	return l
}

// discard removes a container Run made, even when ctx has ended.
func (e *Engine) discard(ctx context.Context, id string) {
	_ = e.containerRemove(context.WithoutCancel(ctx), id, true)
}

func startError(spec RunSpec, step string, err error) error {
	if portBusy(err) {
		return fmt.Errorf("run %s: host port %d on %s is busy (MTTR_PORT): %w", spec.Name, spec.Port, spec.Bind, err)
	}
	return fmt.Errorf("run %s: %s: %w", spec.Name, step, err)
}

func portBusy(err error) bool {
	s := err.Error()
	return strings.Contains(s, "address already in use") || strings.Contains(s, "port is already allocated")
}

// own inspects the container with id or name ref and returns an error
// wrapping ErrNotFound when there is none, or ErrNotOurs when it lacks our
// label.
func (e *Engine) own(ctx context.Context, ref string) (container.InspectResponse, error) {
	res, err := e.containerInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return container.InspectResponse{}, fmt.Errorf("container %s: %w", ref, ErrNotFound)
	} else if err != nil {
		return container.InspectResponse{}, fmt.Errorf("inspect container %s: %w", ref, err)
	}
	info := res.Container
	if info.Config == nil || info.Config.Labels[LabelManaged] != "true" {
		name := strings.TrimPrefix(info.Name, "/")
		return container.InspectResponse{}, fmt.Errorf("container %s exists and was %w (no label %s): refusing to touch it; choose another name with MTTR_CONTAINER", name, ErrNotOurs, LabelManaged)
	}
	return info, nil
}

// inspect returns our broker container with id or name ref, its published
// port read from its network namespace holder when it has one.
func (e *Engine) inspect(ctx context.Context, ref string) (*Container, error) {
	info, err := e.own(ctx, ref)
	if err != nil {
		return nil, err
	}
	c := &Container{ID: info.ID, Name: strings.TrimPrefix(info.Name, "/"), NetNS: NetNSPlain, Labels: info.Config.Labels}
	if info.State != nil {
		c.StartedAt, _ = time.Parse(time.RFC3339Nano, info.State.StartedAt)
	}
	ports := info.NetworkSettings
	if info.HostConfig != nil && info.HostConfig.NetworkMode.IsContainer() {
		holder, err := e.own(ctx, info.HostConfig.NetworkMode.ConnectedContainer())
		if err != nil {
			return nil, fmt.Errorf("container %s: network holder: %w", c.Name, err)
		}
		c.NetNS, c.HolderID, c.HolderName = NetNSHolder, holder.ID, strings.TrimPrefix(holder.Name, "/")
		ports = holder.NetworkSettings
	}
	if ports != nil {
		for name, ep := range ports.Networks {
			// A readdress network's address changes: the first network's stays.
			if ep != nil && ep.IPAddress.IsValid() && !strings.HasSuffix(name, readdressSuffix) {
				c.IP = ep.IPAddress
				break
			}
		}
		for _, b := range ports.Ports[mqttPort] {
			if p, err := strconv.Atoi(b.HostPort); err == nil {
				c.Port = p
				c.Bind = b.HostIP.String()
				if !b.HostIP.IsValid() || b.HostIP.IsUnspecified() {
					c.Bind = "127.0.0.1"
				}
				break
			}
		}
	}
	return c, nil
}

// Find returns our container called name, an error wrapping ErrNotFound when
// there is none, or one wrapping ErrNotOurs when it is somebody else's.
func (e *Engine) Find(ctx context.Context, name string) (*Container, error) {
	return e.inspect(ctx, name)
}

// Remove stops and removes our container called name, its netfilter
// helper <name>-netfilter and its network namespace holder <name>-netns,
// then its readdress network <name>-readdress.
// It touches none when one is not ours (ErrNotOurs), and returns an error
// wrapping ErrNotFound when there is none.
func (e *Engine) Remove(ctx context.Context, name string) error {
	var ids []string
	for _, ref := range []string{name, NetfilterName(name), HolderName(name)} { // those who join the holder first
		info, err := e.own(ctx, ref)
		if errors.Is(err, ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		ids = append(ids, info.ID)
	}
	if len(ids) == 0 {
		return fmt.Errorf("container %s: %w", name, ErrNotFound)
	}
	for _, id := range ids {
		if err := e.containerRemove(ctx, id, true); err != nil && !cerrdefs.IsNotFound(err) && !beingRemoved(err) {
			return fmt.Errorf("remove container %s: %w", name, err)
		}
	}
	return e.removeOwnNetwork(ctx, ReaddressName(name))
}

// Discard force-removes the broker container called name, its netfilter
// helper and its holder, all at once and without inspecting them first
// (they must be the caller's own, made by Run), then its readdress
// network. An engine that does not answer in time still
// has the requests, and carries them out when it answers again: after
// any start of the broker still waiting there, or at the same time.
func (e *Engine) Discard(ctx context.Context, name string) error {
	refs := []string{name, NetfilterName(name), HolderName(name)}
	errs := make([]error, len(refs))
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Go(func() {
			if err := e.containerRemove(ctx, ref, true); err != nil && !cerrdefs.IsNotFound(err) && !beingRemoved(err) {
				errs[i] = fmt.Errorf("remove container %s: %w", ref, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(append(errs, e.removeOwnNetwork(ctx, ReaddressName(name)))...)
}

// Stop stops our broker container called name gracefully (SIGTERM, then
// SIGKILL after timeout). Its network namespace holder keeps running.
func (e *Engine) Stop(ctx context.Context, name string, timeout time.Duration) error {
	info, err := e.own(ctx, name)
	if err != nil {
		return err
	}
	if err := e.containerStop(ctx, info.ID, timeout); err != nil {
		return fmt.Errorf("stop container %s: %w", name, err)
	}
	return nil
}

// Leftovers returns our containers that carry label (any value), e.g.
// those of runs that may have been killed before they could clean up:
// brokers before network namespace holders, so that removing them in
// order never leaves a broker without its namespace.
func (e *Engine) Leftovers(ctx context.Context, label string) ([]LeftOver, error) {
	list, err := e.containerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", LabelManaged+"=true").Add("label", label),
	})
	if err != nil {
		return nil, fmt.Errorf("list leftover containers: %w", err)
	}
	var out []LeftOver
	for _, c := range list.Items {
		out = append(out, LeftOver{ID: c.ID, Name: containerName(c.Names, c.ID), Label: c.Labels[label], Role: c.Labels[LabelRole]})
	}
	slices.SortStableFunc(out, func(a, b LeftOver) int {
		return cmp.Compare(b2i(a.Role == RoleNetNS), b2i(b.Role == RoleNetNS))
	})
	return out, nil
}

// LeftOver is a container found by Leftovers.
type LeftOver struct {
	ID, Name string
	Label    string // the value of the label asked for
	Role     string // RoleBroker, RoleNetNS, or empty for containers of older versions
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// RemoveID removes our container with id, running or not. One that
// another run is removing already (two runs tidying the same leftovers at
// once) counts as removed.
func (e *Engine) RemoveID(ctx context.Context, id string) error {
	err := e.containerRemove(ctx, id, true)
	switch {
	case err == nil, cerrdefs.IsNotFound(err), beingRemoved(err):
		return nil
	}
	return fmt.Errorf("remove container %s: %w", id, err)
}

// beingRemoved reports whether err is the engine's answer to removing a
// container whose removal is under way.
func beingRemoved(err error) bool {
	return cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress")
}

// ImageID returns the id of the image tagged tag.
func (e *Engine) ImageID(ctx context.Context, tag string) (string, error) {
	img, err := e.InspectImage(ctx, tag)
	return img.ID, err
}

// Logs returns the last tail lines the container wrote to stdout and stderr.
func (e *Engine) Logs(ctx context.Context, ref string, tail int) (string, error) {
	return call(ctx, e, "container logs", 0, func(ctx context.Context) (string, error) {
		rc, err := e.cli.ContainerLogs(ctx, ref, client.ContainerLogsOptions{
			ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(tail),
		})
		if err != nil {
			return "", fmt.Errorf("logs %s: %w", ref, err)
		}
		defer rc.Close()
		var buf bytes.Buffer
		if _, err := stdcopy.StdCopy(&buf, &buf, rc); err != nil {
			return buf.String(), fmt.Errorf("logs %s: %w", ref, err)
		}
		return buf.String(), nil
	})
}

// WaitReady waits until the broker in c accepts an MQTT CONNECT over TLS
// verified by tlsConf, dialing addr (c.Addr() when empty) every interval.
// It fails at once when the container dies, with its last log lines.
func (e *Engine) WaitReady(ctx context.Context, c *Container, addr string, tlsConf *tls.Config, interval time.Duration) (time.Time, error) {
	return e.WaitReadyVia(ctx, c, nil, addr, tlsConf, interval)
}

// WaitReadyVia is WaitReady with probes over connections that dial opens
// (nil: from any local port).
func (e *Engine) WaitReadyVia(ctx context.Context, c *Container, dial netfault.Dial, addr string, tlsConf *tls.Config, interval time.Duration) (time.Time, error) {
	if addr == "" {
		addr = c.Addr()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var died atomic.Pointer[error]
	since := c.StartedAt
	if since.IsZero() {
		since = time.Now().Add(-time.Minute)
	}
	evs := e.cli.Events(ctx, client.EventsListOptions{
		Since: fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		Filters: make(client.Filters).
			Add("type", "container").
			Add("container", c.ID).
			Add("event", "die", "destroy", "oom"),
	})
	go func() {
		select {
		case m := <-evs.Messages:
			err := e.deathError(context.WithoutCancel(ctx), c, string(m.Action))
			died.Store(&err)
			cancel()
		case <-evs.Err:
		case <-ctx.Done():
		}
	}()
	alive := func() error {
		if p := died.Load(); p != nil {
			return *p
		}
		return nil
	}
	at, err := mqttprobe.WaitVia(ctx, dial, addr, tlsConf, interval, alive)
	if p := died.Load(); p != nil {
		return time.Time{}, *p
	}
	return at, err
}

func (e *Engine) deathError(ctx context.Context, c *Container, action string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	code := ""
	if res, err := e.containerInspect(ctx, c.ID); err == nil && res.Container.State != nil {
		code = fmt.Sprintf(" (exit code %d)", res.Container.State.ExitCode)
	}
	logs, _ := e.Logs(ctx, c.ID, 20)
	return fmt.Errorf("broker container %s: %s%s; last log lines:\n%s", c.Name, action, code, strings.TrimRight(logs, "\n"))
}
