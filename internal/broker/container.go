package broker

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/mttrlab/mttr/internal/mqttprobe"
)

// MQTTPort is the broker's port inside the container.
const MQTTPort = 8883

// RunSpec describes a broker container.
type RunSpec struct {
	Name  string // container name, e.g. expecto-patronum
	Image string // image tag, e.g. mqtt-broker
	Bind  string // host address the port is published on, e.g. 127.0.0.1
	Port  int    // host port; 0 lets the engine pick a free one
	// Labels are added to the container's, e.g. the run it belongs to.
	Labels map[string]string
}

// Container is a running broker container.
type Container struct {
	ID        string
	Name      string
	Bind      string
	Port      int       // host port the broker is published on
	StartedAt time.Time // when the engine started it
	// StartReturned is when our start call returned (zero for a container
	// found rather than started).
	StartReturned time.Time
}

// Addr is the published address, bind:port.
func (c *Container) Addr() string { return net.JoinHostPort(c.Bind, strconv.Itoa(c.Port)) }

var mqttPort = network.MustParsePort(strconv.Itoa(MQTTPort) + "/tcp")

// Run starts a fresh broker container from spec. A previous container of
// ours with the same name is removed first; one that is not ours is refused.
// The container is removed again when it cannot be started.
func (e *Engine) Run(ctx context.Context, spec RunSpec) (*Container, error) {
	if _, err := e.InspectImage(ctx, spec.Image); err != nil {
		return nil, fmt.Errorf("run %s: %w: build it with `mage image`", spec.Name, err)
	}
	if err := e.Remove(ctx, spec.Name); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("run %s: %w", spec.Name, err)
	}
	bind, err := netip.ParseAddr(spec.Bind)
	if err != nil {
		return nil, fmt.Errorf("run %s: bind address %q: %w", spec.Name, spec.Bind, err)
	}
	hostPort := ""
	if spec.Port != 0 {
		hostPort = strconv.Itoa(spec.Port)
	}
	labels := map[string]string{LabelManaged: "true"}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	created, err := e.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: spec.Name,
		Config: &container.Config{
			Image:        spec.Image,
			Labels:       labels,
			ExposedPorts: network.PortSet{mqttPort: {}},
		},
		HostConfig: &container.HostConfig{
			PortBindings: network.PortMap{mqttPort: {{HostIP: bind, HostPort: hostPort}}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("run %s: create: %w", spec.Name, err)
	}
	if _, err := e.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		_, _ = e.cli.ContainerRemove(context.WithoutCancel(ctx), created.ID, client.ContainerRemoveOptions{Force: true})
		if portBusy(err) {
			return nil, fmt.Errorf("run %s: host port %d on %s is busy (MTTR_PORT): %w", spec.Name, spec.Port, spec.Bind, err)
		}
		return nil, fmt.Errorf("run %s: start: %w", spec.Name, err)
	}
	started := time.Now()
	c, err := e.inspect(ctx, created.ID)
	if err != nil {
		// Started but unreadable: do not leave it running.
		_, _ = e.cli.ContainerRemove(context.WithoutCancel(ctx), created.ID, client.ContainerRemoveOptions{Force: true})
		return nil, fmt.Errorf("run %s: %w", spec.Name, err)
	}
	c.StartReturned = started
	return c, nil
}

func portBusy(err error) bool {
	s := err.Error()
	return strings.Contains(s, "address already in use") || strings.Contains(s, "port is already allocated")
}

// inspect returns the container with id or name ref, or an error wrapping
// ErrNotFound, or ErrNotOurs when it lacks our label.
func (e *Engine) inspect(ctx context.Context, ref string) (*Container, error) {
	res, err := e.cli.ContainerInspect(ctx, ref, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil, fmt.Errorf("container %s: %w", ref, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("inspect container %s: %w", ref, err)
	}
	info := res.Container
	name := strings.TrimPrefix(info.Name, "/")
	if info.Config == nil || info.Config.Labels[LabelManaged] != "true" {
		return nil, fmt.Errorf("container %s exists and was %w (no label %s): refusing to touch it; choose another name with MTTR_CONTAINER", name, ErrNotOurs, LabelManaged)
	}
	c := &Container{ID: info.ID, Name: name}
	if info.State != nil {
		c.StartedAt, _ = time.Parse(time.RFC3339Nano, info.State.StartedAt)
	}
	if info.NetworkSettings != nil {
		for _, b := range info.NetworkSettings.Ports[mqttPort] {
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

// Remove stops and removes our container called name. It refuses (ErrNotOurs)
// to touch a container of that name that MTTR lab did not make, and returns
// an error wrapping ErrNotFound when there is none.
func (e *Engine) Remove(ctx context.Context, name string) error {
	c, err := e.inspect(ctx, name)
	if err != nil {
		return err
	}
	if _, err := e.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", name, err)
	}
	return nil
}

// Stop stops our container called name gracefully (SIGTERM, then SIGKILL
// after timeout).
func (e *Engine) Stop(ctx context.Context, name string, timeout time.Duration) error {
	c, err := e.inspect(ctx, name)
	if err != nil {
		return err
	}
	secs := int(timeout.Seconds())
	if _, err := e.cli.ContainerStop(ctx, c.ID, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		return fmt.Errorf("stop container %s: %w", name, err)
	}
	return nil
}

// Leftovers returns our containers that carry label (any value), e.g.
// those of runs that may have been killed before they could clean up.
func (e *Engine) Leftovers(ctx context.Context, label string) ([]LeftOver, error) {
	list, err := e.cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", LabelManaged+"=true").Add("label", label),
	})
	if err != nil {
		return nil, fmt.Errorf("list leftover containers: %w", err)
	}
	var out []LeftOver
	for _, c := range list.Items {
		out = append(out, LeftOver{ID: c.ID, Name: containerName(c.Names, c.ID), Label: c.Labels[label]})
	}
	return out, nil
}

// LeftOver is a container found by Leftovers.
type LeftOver struct {
	ID, Name string
	Label    string // the value of the label asked for
}

// RemoveID removes our container with id, running or not.
func (e *Engine) RemoveID(ctx context.Context, id string) error {
	if _, err := e.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

// ImageID returns the id of the image tagged tag.
func (e *Engine) ImageID(ctx context.Context, tag string) (string, error) {
	img, err := e.InspectImage(ctx, tag)
	return img.ID, err
}

// Logs returns the last tail lines the container wrote to stdout and stderr.
func (e *Engine) Logs(ctx context.Context, ref string, tail int) (string, error) {
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
}

// WaitReady waits until the broker in c accepts an MQTT CONNECT over TLS
// verified by tlsConf, dialing addr (c.Addr() when empty) every interval.
// It fails at once when the container dies, with its last log lines.
func (e *Engine) WaitReady(ctx context.Context, c *Container, addr string, tlsConf *tls.Config, interval time.Duration) (time.Time, error) {
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
	at, err := mqttprobe.Wait(ctx, addr, tlsConf, interval, alive)
	if p := died.Load(); p != nil {
		return time.Time{}, *p
	}
	return at, err
}

func (e *Engine) deathError(ctx context.Context, c *Container, action string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	code := ""
	if res, err := e.cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{}); err == nil && res.Container.State != nil {
		code = fmt.Sprintf(" (exit code %d)", res.Container.State.ExitCode)
	}
	logs, _ := e.Logs(ctx, c.ID, 20)
	return fmt.Errorf("broker container %s: %s%s; last log lines:\n%s", c.Name, action, code, strings.TrimRight(logs, "\n"))
}
