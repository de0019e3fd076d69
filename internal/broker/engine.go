// Package broker runs the MQTT broker as a Docker container through the
// Engine API: build its image, run it, take it away and bring it back, wait
// until it really answers MQTT over verified TLS, read its logs and remove
// what we made. It touches only images and containers that carry our label;
// anything else of the same name is refused, not overwritten.
//
// It believes a fault should take away the broker, not the path to it. By
// default a long-lived holder container, <name>-netns, owns the broker's
// network namespace and published port, and the broker joins it, as a
// Kubernetes pod sandbox does: stopping, restarting or recreating the broker
// leaves its address, veth and the engine's port proxy in place, so a client
// knocking during the outage is accepted and closed at once instead of
// meeting a path that is being torn down and rebuilt. Plain Docker, where
// the broker owns its namespace and port, stays selectable (NetNSPlain).
package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/moby/moby/client"
)

// Labels that mark what MTTR lab made.
const (
	LabelManaged    = "org.mttrlab.managed"     // "true" on every image and container we made
	LabelHost       = "org.mttrlab.host"        // the host name in the image's certificate
	LabelCertSHA256 = "org.mttrlab.cert-sha256" // that certificate's SHA-256 fingerprint
	LabelRole       = "org.mttrlab.role"        // on containers: RoleBroker or RoleNetNS
)

// Roles of our containers, as LabelRole names them.
const (
	RoleBroker = "broker" // the broker itself
	RoleNetNS  = "netns"  // the holder of a broker's network namespace and port
	// RoleNetfilter is the helper that changes the packet filter of a
	// broker's network namespace (network faults).
	RoleNetfilter = "netfilter"
)

// Engine is a connection to a Docker engine. Every call it makes is
// bounded: an engine that does not answer within its call timeout is
// reported as such (*NoAnswerError), naming the call.
type Engine struct {
	cli     *client.Client
	host    string
	version string
	timeout time.Duration // per call; see call
}

// Connect is ConnectWithin with DefaultCallTimeout.
func Connect(ctx context.Context) (*Engine, error) { return ConnectWithin(ctx, DefaultCallTimeout) }

// ConnectWithin reaches the engine named by DOCKER_HOST, DOCKER_TLS_VERIFY
// and DOCKER_CERT_PATH (the local socket when unset), negotiates the API
// version and checks that the engine answers. Each call of the engine may
// take timeout (plus what the call waits for by design, such as a stop's
// grace period).
func ConnectWithin(ctx context.Context, timeout time.Duration) (*Engine, error) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	e := &Engine{cli: cli, host: cli.DaemonHost(), timeout: timeout}
	if err := do(ctx, e, "ping", 0, func(ctx context.Context) (client.PingResult, error) {
		return cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
	}); err != nil {
		cli.Close()
		var na *NoAnswerError
		if errors.As(err, &na) {
			return nil, err
		}
		return nil, fmt.Errorf("docker engine not reachable at %s (DOCKER_HOST=%q): %w", e.host, os.Getenv("DOCKER_HOST"), err)
	}
	v, err := call(ctx, e, "version", 0, func(ctx context.Context) (client.ServerVersionResult, error) {
		return cli.ServerVersion(ctx, client.ServerVersionOptions{})
	})
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("docker engine version: %w", err)
	}
	e.version = v.Version
	return e, nil
}

// Host is the engine's address, e.g. unix:///var/run/docker.sock.
func (e *Engine) Host() string { return e.host }

// Version is the engine's version and the negotiated API version.
func (e *Engine) Version() string {
	return fmt.Sprintf("%s (API %s)", e.version, e.cli.ClientVersion())
}

// Close releases the engine connection.
func (e *Engine) Close() error { return e.cli.Close() }

// ErrNotFound reports a missing image or container.
var ErrNotFound = errors.New("not found")

// ErrNotOurs reports an image or container that MTTR lab did not make.
var ErrNotOurs = errors.New("not made by MTTR lab")
