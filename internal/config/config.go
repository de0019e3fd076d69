// Package config reads MTTR lab's settings from MTTR_* environment variables.
// Every value is validated before anything starts, and a bad one is reported
// as one line naming the variable and the value. Defaults live in Defaults.
package config

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mttrlab/mttr/internal/certs"
)

// Config is every setting the targets read, resolved.
type Config struct {
	Host             string        // MTTR_HOST: name in the certificate, TLS server name the device verifies
	CertDir          string        // MTTR_CERT_DIR: where certificates live, one directory per host
	CertDays         int           // MTTR_CERT_DAYS: validity of a new certificate
	Image            string        // MTTR_IMAGE: broker image tag
	NodeImage        string        // MTTR_NODE_IMAGE: base image for the broker image
	Container        string        // MTTR_CONTAINER: broker container name
	Port             int           // MTTR_PORT: host port the broker is published on
	Bind             string        // MTTR_BIND: host address the port is bound to
	BrokerAddr       string        // MTTR_BROKER_ADDR: where devices dial (host:port)
	ReadyTimeout     time.Duration // MTTR_READY_TIMEOUT: how long to wait for the broker's first CONNACK
	KeepAlive        time.Duration // MTTR_KEEP_ALIVE: MQTT keep-alive of the device
	SendInterval     time.Duration // MTTR_SEND_INTERVAL: time between telemetry messages
	ConnectionString string        // MTTR_CONNECTION_STRING: the device's identity
}

// Defaults holds the value of every setting when its variable is unset.
var Defaults = Config{
	Host:             "localhost",
	CertDir:          "results/certs",
	CertDays:         365,
	Image:            "mqtt-broker",
	NodeImage:        "node:24-slim",
	Container:        "expecto-patronum",
	Port:             8883,
	Bind:             "127.0.0.1",
	ReadyTimeout:     60 * time.Second,
	KeepAlive:        15 * time.Second,
	SendInterval:     3 * time.Second,
	ConnectionString: "HostName=localhost;DeviceId=devicemtr;SharedAccessKey=Zm9vYmFy",
}

// FromEnv loads the configuration from the process environment.
func FromEnv() (Config, error) { return Load(os.LookupEnv) }

// Load resolves every setting through lookup (os.LookupEnv in production),
// falling back to Defaults, and validates the result. An empty value counts
// as unset.
func Load(lookup func(string) (string, bool)) (Config, error) {
	c := Defaults
	r := reader{lookup: lookup}
	r.str("MTTR_HOST", &c.Host)
	r.str("MTTR_CERT_DIR", &c.CertDir)
	r.count("MTTR_CERT_DAYS", &c.CertDays)
	r.str("MTTR_IMAGE", &c.Image)
	r.str("MTTR_NODE_IMAGE", &c.NodeImage)
	r.str("MTTR_CONTAINER", &c.Container)
	r.port("MTTR_PORT", &c.Port)
	r.str("MTTR_BIND", &c.Bind)
	r.duration("MTTR_READY_TIMEOUT", &c.ReadyTimeout)
	r.duration("MTTR_KEEP_ALIVE", &c.KeepAlive)
	r.duration("MTTR_SEND_INTERVAL", &c.SendInterval)
	r.str("MTTR_CONNECTION_STRING", &c.ConnectionString)
	c.BrokerAddr = net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	r.str("MTTR_BROKER_ADDR", &c.BrokerAddr)
	if r.err != nil {
		return Config{}, r.err
	}
	if err := certs.ValidateHost(c.Host); err != nil {
		return Config{}, fmt.Errorf("MTTR_HOST=%q: %w", c.Host, err)
	}
	if net.ParseIP(c.Bind) == nil {
		return Config{}, fmt.Errorf("MTTR_BIND=%q: not an IP address", c.Bind)
	}
	if _, port, err := net.SplitHostPort(c.BrokerAddr); err != nil || port == "" {
		return Config{}, fmt.Errorf("MTTR_BROKER_ADDR=%q: want host:port", c.BrokerAddr)
	}
	if c.KeepAlive < time.Second {
		return Config{}, fmt.Errorf("MTTR_KEEP_ALIVE=%s: MQTT keep-alive is whole seconds, at least 1s", c.KeepAlive)
	}
	return c, nil
}

// Duration parses a duration in Go syntax ("1500ms", "2m") or a plain number
// of seconds ("15", "0.5").
func Duration(s string) (time.Duration, error) {
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(secs * float64(time.Second)), nil
	}
	return time.ParseDuration(s)
}

type reader struct {
	lookup func(string) (string, bool)
	err    error
}

func (r *reader) get(name string) (string, bool) {
	if r.err != nil {
		return "", false
	}
	v, ok := r.lookup(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

func (r *reader) fail(name, value, why string) {
	r.err = fmt.Errorf("%s=%q: %s", name, value, why)
}

func (r *reader) str(name string, dst *string) {
	if v, ok := r.get(name); ok {
		*dst = v
	}
}

func (r *reader) count(name string, dst *int) {
	v, ok := r.get(name)
	if !ok {
		return
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		r.fail(name, v, "not a whole number")
	case n < 1:
		r.fail(name, v, "must be at least 1")
	default:
		*dst = n
	}
}

func (r *reader) port(name string, dst *int) {
	v, ok := r.get(name)
	if !ok {
		return
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		r.fail(name, v, "not a port number (1-65535)")
		return
	}
	*dst = n
}

func (r *reader) duration(name string, dst *time.Duration) {
	v, ok := r.get(name)
	if !ok {
		return
	}
	d, err := Duration(v)
	switch {
	case err != nil:
		r.fail(name, v, `not a duration (e.g. "15s", "1500ms" or "15")`)
	case d <= 0:
		r.fail(name, v, "must be positive")
	default:
		*dst = d
	}
}
