// Package config reads MTTR lab's settings from MTTR_* environment variables.
// Every value is validated before anything starts, and a bad one is reported
// as one line naming the variable and the value. Defaults live in Defaults.
package config

import (
	"fmt"
	"github.com/mttrlab/mttr/internal/commalist"
	"github.com/mttrlab/mttr/internal/dbref"
	"maps"
	"math"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/certs"
	"github.com/mttrlab/mttr/internal/device"
	"github.com/mttrlab/mttr/internal/netfault"
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
	EngineTimeout    time.Duration // MTTR_ENGINE_TIMEOUT: how long one Docker engine call may take
	KeepAlive        time.Duration // MTTR_KEEP_ALIVE: MQTT keep-alive of the device
	SendInterval     time.Duration // MTTR_SEND_INTERVAL: time between telemetry messages
	ConnectionString string        // MTTR_CONNECTION_STRING: the device's identity

	// The experiment (mage mttr).
	Devices              int              // MTTR_DEVICES: devices connected at once
	RestartCount         int              // MTTR_RESTART_COUNT: fault cycles per run
	KeepRunning          time.Duration    // MTTR_KEEP_RUNNING: broker up time before each fault
	KeepRunningJitter    time.Duration    // MTTR_KEEP_RUNNING_JITTER: each cycle's up time is KeepRunning ± up to this, at random
	KeepDead             time.Duration    // MTTR_KEEP_DEAD: broker down time; default KeepAlive × FactorOfKeepAlive
	FactorOfKeepAlive    float64          // MTTR_FACTOR_OF_KEEP_ALIVE: KeepDead as a multiple of KeepAlive
	RecoveryTimeout      time.Duration    // MTTR_RECOVERY_TIMEOUT: how long a cycle waits for every device to recover
	Fault                string           // MTTR_FAULT: how the broker goes away, one of Faults
	Broker               string           // MTTR_BROKER: where the broker runs, one of Brokers
	NetNS                string           // MTTR_NETNS: for docker, who owns the broker's network namespace, one of NetNSModes
	Loss                 float64          // MTTR_LOSS: fraction of packets the loss fault drops each way
	Latency              time.Duration    // MTTR_LATENCY: delay the latency fault adds each way
	Jitter               time.Duration    // MTTR_JITTER: ± around MTTR_LATENCY
	IdleTimeout          time.Duration    // MTTR_IDLE_TIMEOUT: the idle fault's path drops flows idle this long
	Rate                 int64            // MTTR_RATE: bytes per second the bandwidth fault allows each way
	Link                 netfault.Link    // MTTR_LINK: the whole run's path (latency, jitter, loss, rate)
	NetfilterImage       string           // MTTR_NETFILTER_IMAGE: helper image with nft and ss, made when missing
	PingTimeout          time.Duration    // MTTR_PING_TIMEOUT: device waits this long for PINGRESP
	ConnectTimeout       time.Duration    // MTTR_CONNECT_TIMEOUT: one connection attempt of a device
	MaxReconnectInterval time.Duration    // MTTR_MAX_RECONNECT_INTERVAL: cap of paho's reconnect backoff
	ConnectRetryInterval time.Duration    // MTTR_CONNECT_RETRY_INTERVAL: between first-connection attempts
	CleanSession         bool             // MTTR_CLEAN_SESSION: MQTT clean session flag of the devices
	TLS                  device.TLSPolicy // MTTR_TLS_RESUMPTION, MTTR_TLS_GROUPS: our devices' session resumption and key-exchange groups
	Resubscribe          string           // MTTR_RESUBSCRIBE: "onconnect" (resubscribe to commands in OnConnect) or "none"
	C2DInterval          time.Duration    // MTTR_C2D_INTERVAL: between commands sent to each device
	QoS                  int              // MTTR_QOS: telemetry QoS, 1 (measured) or 0 (fire and forget)
	Label                string           // MTTR_LABEL: free text stored with the run, e.g. an SDK version
	StoreGrace           time.Duration    // MTTR_STORE_GRACE: how long a run's end retries a store that refuses its rows before writing them to a rescue file
	Study                string           // MTTR_STUDY: the label of the study the run or runs belong to
	StudySeed            uint64           // MTTR_STUDY_SEED: the seed of a new study's order; 0 draws one
	// Cells are a study's combinations, one run each, every one resolved
	// and validated as a run's settings: every value of MTTR_FAULT,
	// MTTR_KEEP_DEAD and MTTR_DEVICES (comma lists) with every other, in
	// the order given. Nil for a single run outside a study.
	Cells     []Config
	Client    string // MTTR_CLIENT: "paho" (our device) or "external" (MTTR_CLIENT_CMD)
	ClientCmd string // MTTR_CLIENT_CMD: the external client's command line, run with sh -c
	DB        string // MTTR_DB: results database

	// Reports (mage report, compare, check).
	Last     int           // MTTR_LAST: how many runs the report lists
	Baseline string        // MTTR_BASELINE: run id or label to compare the newest run with
	Alpha    float64       // MTTR_ALPHA: significance level of comparisons
	Format   string        // MTTR_FORMAT: one of Formats
	MaxP95   time.Duration // MTTR_MAX_P95: recovery p95 above which check fails; 0 means no limit
	HTML     string        // MTTR_HTML: where the HTML report is written
}

// Formats are the report formats MTTR_FORMAT accepts.
var Formats = []string{"text", "markdown", "csv", "json"}

// BrokerFaults are the ways MTTR_FAULT can take the broker away.
var BrokerFaults = []string{"stop", "kill", "restart", "recreate", "pause", "disconnect"}

// Faults are MTTR_FAULT's values: the broker faults, then the network
// faults (package netfault), which leave the broker running.
var Faults = append(slices.Clone(BrokerFaults), netfault.Faults...)

// Brokers are where MTTR_BROKER can run the broker: a Docker container, or
// a local Node process.
var Brokers = []string{"docker", "process"}

// ProcessFaults are the faults a local process broker supports: signals.
var ProcessFaults = []string{"stop", "kill", "pause"}

// Resubscribes are MTTR_RESUBSCRIBE's values: what our device does about
// its command subscription after a reconnect. "onconnect" subscribes again
// in paho's OnConnect, as a careful application does; "none" does nothing,
// as a naive one does (paho does not resubscribe by itself).
var Resubscribes = []string{"onconnect", "none"}

// NetNSModes are MTTR_NETNS's values: "holder" keeps the broker's network
// namespace (and published port) in a long-lived holder container across
// restarts; "plain" is plain Docker, the broker container owns them.
var NetNSModes = []string{"holder", "plain"}

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
	EngineTimeout:    broker.DefaultCallTimeout,
	KeepAlive:        15 * time.Second,
	SendInterval:     3 * time.Second,
	ConnectionString: "HostName=localhost;DeviceId=devicemtr;SharedAccessKey=Zm9vYmFy",

	Devices:              1,
	RestartCount:         5,
	KeepRunning:          10 * time.Second,
	FactorOfKeepAlive:    0.5,
	RecoveryTimeout:      2 * time.Minute,
	Fault:                "stop",
	Broker:               "docker",
	NetNS:                "holder",
	Loss:                 0.3,
	Latency:              500 * time.Millisecond,
	IdleTimeout:          4 * time.Minute,
	Rate:                 64_000 / 8,
	NetfilterImage:       broker.DefaultNetfilterImage,
	PingTimeout:          10 * time.Second,
	ConnectTimeout:       30 * time.Second,
	MaxReconnectInterval: 10 * time.Minute,
	ConnectRetryInterval: 30 * time.Second,
	CleanSession:         true,
	Resubscribe:          "onconnect",
	C2DInterval:          2 * time.Second,
	QoS:                  1,
	Client:               "paho",
	DB:                   "results/mttr.db",
	StoreGrace:           30 * time.Second,

	Last:   20,
	Alpha:  0.05,
	Format: "text",
	HTML:   "results/report.html",
}

// FromEnv loads the configuration from the process environment.
func FromEnv() (Config, error) { return Load(os.LookupEnv) }

// StudyAxes are the settings that take a comma list, making a study of
// every combination of their values.
var StudyAxes = []string{"MTTR_FAULT", "MTTR_KEEP_DEAD", "MTTR_DEVICES"}

// Load resolves every setting through lookup (os.LookupEnv in production),
// falling back to Defaults, and validates the result. An empty value counts
// as unset. When a StudyAxes setting is a comma list, or MTTR_STUDY is
// set, the result is the first combination, and Cells holds them all.
func Load(lookup func(string) (string, bool)) (Config, error) {
	lists := map[string][]string{}
	for _, k := range StudyAxes {
		v, ok := lookup(k)
		if !ok || !strings.Contains(v, ",") {
			continue
		}
		parts, err := commalist.Split(v)
		if err != nil {
			return Config{}, fmt.Errorf("%s=%q: %w", k, v, err)
		}
		lists[k] = parts
	}
	with := func(cell map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) {
			if v, ok := cell[k]; ok {
				return v, true
			}
			return lookup(k)
		}
	}
	first := map[string]string{}
	for k, l := range lists {
		first[k] = l[0]
	}
	c, err := load(with(first))
	if err != nil {
		return Config{}, err
	}
	r := reader{lookup: lookup}
	r.str("MTTR_STUDY", &c.Study)
	r.parse("MTTR_STUDY_SEED", func(v string) (err error) {
		if c.StudySeed, err = strconv.ParseUint(v, 10, 64); err != nil {
			err = fmt.Errorf("%q: want a whole number", v)
		}
		return err
	})
	if r.err != nil {
		return Config{}, r.err
	}
	if len(lists) == 0 && c.Study == "" {
		return c, nil
	}
	// Every combination, the first axis varying slowest.
	cells := []map[string]string{{}}
	for _, k := range StudyAxes {
		vals, ok := lists[k]
		if !ok {
			continue
		}
		var next []map[string]string
		for _, cell := range cells {
			for _, v := range vals {
				n := maps.Clone(cell)
				n[k] = v
				next = append(next, n)
			}
		}
		cells = next
	}
	seen := map[string]bool{}
	for _, cell := range cells {
		cc, err := load(with(cell))
		if err != nil {
			var parts []string
			for _, k := range StudyAxes {
				if v, ok := cell[k]; ok {
					parts = append(parts, k+"="+v)
				}
			}
			return Config{}, fmt.Errorf("study combination %s: %w", strings.Join(parts, " "), err)
		}
		key := fmt.Sprintf("MTTR_FAULT=%s MTTR_KEEP_DEAD=%s MTTR_DEVICES=%d", cc.Fault, cc.KeepDead, cc.Devices)
		if seen[key] {
			return Config{}, fmt.Errorf("study: the combination %s comes twice (the lists name one value in two ways)", key)
		}
		seen[key] = true
		cc.Study, cc.StudySeed = c.Study, c.StudySeed
		c.Cells = append(c.Cells, cc)
	}
	return c, nil
}

// load is Load for one combination.
func load(lookup func(string) (string, bool)) (Config, error) {
	c := Defaults
	r := reader{lookup: lookup, given: map[string]string{}, from: map[string]string{}}
	r.str("MTTR_HOST", &c.Host)
	r.str("MTTR_CERT_DIR", &c.CertDir)
	r.count("MTTR_CERT_DAYS", &c.CertDays)
	r.str("MTTR_IMAGE", &c.Image)
	r.str("MTTR_NODE_IMAGE", &c.NodeImage)
	r.str("MTTR_CONTAINER", &c.Container)
	r.port("MTTR_PORT", &c.Port)
	r.str("MTTR_BIND", &c.Bind)
	r.duration("MTTR_READY_TIMEOUT", &c.ReadyTimeout)
	r.duration("MTTR_ENGINE_TIMEOUT", &c.EngineTimeout)
	r.duration("MTTR_KEEP_ALIVE", &c.KeepAlive)
	r.duration("MTTR_SEND_INTERVAL", &c.SendInterval)
	r.str("MTTR_CONNECTION_STRING", &c.ConnectionString)
	c.BrokerAddr = net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	r.from["MTTR_BROKER_ADDR"] = fmt.Sprintf("%q, from %s", c.BrokerAddr, r.inputs("MTTR_HOST", "MTTR_PORT"))
	r.str("MTTR_BROKER_ADDR", &c.BrokerAddr)
	r.count("MTTR_DEVICES", &c.Devices)
	r.count("MTTR_RESTART_COUNT", &c.RestartCount)
	r.duration("MTTR_KEEP_RUNNING", &c.KeepRunning)
	r.duration("MTTR_KEEP_RUNNING_JITTER", &c.KeepRunningJitter)
	r.positive("MTTR_FACTOR_OF_KEEP_ALIVE", &c.FactorOfKeepAlive)
	r.derive("MTTR_KEEP_DEAD", &c.KeepDead, float64(c.KeepAlive)*c.FactorOfKeepAlive, "MTTR_KEEP_ALIVE", "MTTR_FACTOR_OF_KEEP_ALIVE")
	r.duration("MTTR_KEEP_DEAD", &c.KeepDead)
	r.duration("MTTR_RECOVERY_TIMEOUT", &c.RecoveryTimeout)
	r.oneOf("MTTR_FAULT", &c.Fault, Faults)
	r.oneOf("MTTR_BROKER", &c.Broker, Brokers)
	r.oneOf("MTTR_NETNS", &c.NetNS, NetNSModes)
	r.parse("MTTR_LOSS", func(v string) (err error) { c.Loss, err = netfault.ParseLoss(v); return })
	r.parse("MTTR_LATENCY", func(v string) (err error) { c.Latency, err = netfault.ParseDelay(v); return })
	r.duration("MTTR_IDLE_TIMEOUT", &c.IdleTimeout)
	r.parse("MTTR_JITTER", func(v string) (err error) { c.Jitter, err = netfault.ParseDelay(v); return })
	r.parse("MTTR_RATE", func(v string) (err error) { c.Rate, err = netfault.ParseRate(v); return })
	r.parse("MTTR_LINK", func(v string) (err error) {
		if c.Link, err = netfault.ParseLink(v); err != nil {
			err = fmt.Errorf("%q: %w", v, err)
		}
		return err
	})
	r.str("MTTR_NETFILTER_IMAGE", &c.NetfilterImage)
	r.duration("MTTR_PING_TIMEOUT", &c.PingTimeout)
	r.duration("MTTR_CONNECT_TIMEOUT", &c.ConnectTimeout)
	r.duration("MTTR_MAX_RECONNECT_INTERVAL", &c.MaxReconnectInterval)
	r.duration("MTTR_CONNECT_RETRY_INTERVAL", &c.ConnectRetryInterval)
	r.boolean("MTTR_CLEAN_SESSION", &c.CleanSession)
	r.boolean("MTTR_TLS_RESUMPTION", &c.TLS.Resume)
	r.parse("MTTR_TLS_GROUPS", func(v string) (err error) { c.TLS.Groups, err = device.ParseGroups(v); return })
	r.oneOf("MTTR_RESUBSCRIBE", &c.Resubscribe, Resubscribes)
	r.duration("MTTR_C2D_INTERVAL", &c.C2DInterval)
	qos := strconv.Itoa(c.QoS)
	r.oneOf("MTTR_QOS", &qos, []string{"0", "1"})
	c.QoS, _ = strconv.Atoi(qos)
	r.str("MTTR_LABEL", &c.Label)
	r.oneOf("MTTR_CLIENT", &c.Client, []string{"paho", "external"})
	r.str("MTTR_CLIENT_CMD", &c.ClientCmd)
	r.parse("MTTR_DB", func(v string) error { c.DB = v; return dbref.Check(v) })
	r.duration("MTTR_STORE_GRACE", &c.StoreGrace)
	r.count("MTTR_LAST", &c.Last)
	r.str("MTTR_BASELINE", &c.Baseline)
	r.positive("MTTR_ALPHA", &c.Alpha)
	r.oneOf("MTTR_FORMAT", &c.Format, Formats)
	r.duration("MTTR_MAX_P95", &c.MaxP95)
	r.str("MTTR_HTML", &c.HTML)
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
		return Config{}, fmt.Errorf("%s: want host:port", r.shown("MTTR_BROKER_ADDR", c.BrokerAddr))
	}
	switch {
	case c.Fault == netfault.Loss && c.Loss == 0:
		return Config{}, fmt.Errorf("MTTR_LOSS=0%%: MTTR_FAULT=loss would drop nothing")
	case c.Fault == netfault.Latency && c.Latency == 0:
		return Config{}, fmt.Errorf("MTTR_LATENCY=0s: MTTR_FAULT=latency would add nothing")
	case c.Fault == netfault.Idle && c.IdleTimeout < time.Second:
		return Config{}, fmt.Errorf("MTTR_IDLE_TIMEOUT=%s: at least 1s", c.IdleTimeout)
	case c.Fault == netfault.Idle && c.SendInterval >= c.IdleTimeout:
		return Config{}, fmt.Errorf("MTTR_SEND_INTERVAL=%s: not shorter than MTTR_IDLE_TIMEOUT=%s, so the path would drop the devices' flows between messages, outside the fault", c.SendInterval, c.IdleTimeout)
	}
	if c.Link != (netfault.Link{}) && c.NetNS == "plain" && !netfault.Is(c.Fault) && c.Broker != "process" {
		return Config{}, fmt.Errorf("MTTR_LINK=%s with MTTR_NETNS=plain and MTTR_FAULT=%s: the broker's address and namespace, where the link leads and its rules live, go with the broker; use MTTR_NETNS=holder", c.Link, c.Fault)
	}
	if c.Link != (netfault.Link{}) && (c.Fault == "disconnect" || c.Fault == netfault.Readdress) {
		return Config{}, fmt.Errorf("MTTR_LINK=%s with MTTR_FAULT=%s: the broker may come back at another address, and the link would still lead to the old one", c.Link, c.Fault)
	}
	if c.KeepRunningJitter > c.KeepRunning {
		return Config{}, fmt.Errorf("MTTR_KEEP_RUNNING_JITTER=%s: more than MTTR_KEEP_RUNNING=%s, and an up time cannot be negative", c.KeepRunningJitter, c.KeepRunning)
	}
	if c.Jitter > c.Latency {
		return Config{}, fmt.Errorf("MTTR_JITTER=%s: more than MTTR_LATENCY=%s, and a packet cannot leave before it was sent", c.Jitter, c.Latency)
	}
	if c.Broker == "process" {
		if !slices.Contains(ProcessFaults, c.Fault) && !netfault.Linked(c.Fault) {
			return Config{}, fmt.Errorf("MTTR_FAULT=%s needs Docker: MTTR_BROKER=process supports %s, %s and %s", c.Fault, strings.Join(ProcessFaults, ", "), netfault.Latency, netfault.Bandwidth)
		}
		if c.Link.Loss > 0 {
			return Config{}, fmt.Errorf("MTTR_LINK=%s: loss %s", c.Link, netfault.ErrNoFilter)
		}
		c.NetNS = "" // a process has no Docker network namespace to hold
	}
	if c.Client == "external" && c.ClientCmd == "" {
		return Config{}, fmt.Errorf(`MTTR_CLIENT=external needs MTTR_CLIENT_CMD, the client's command line (run with sh -c)`)
	}
	if c.Alpha >= 1 {
		return Config{}, fmt.Errorf("MTTR_ALPHA=%g: want a level between 0 and 1, e.g. 0.05", c.Alpha)
	}
	if c.KeepAlive < time.Second || c.KeepAlive%time.Second != 0 {
		return Config{}, fmt.Errorf("%s: MQTT keep-alive is whole seconds, at least 1s", r.shown("MTTR_KEEP_ALIVE", c.KeepAlive.String()))
	}
	if err := c.withinLimits(&r); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Limits beyond which a setting is refused: a run could not work, or a
// value would wrap where it is sent.
const (
	MaxKeepAlive    = 65535 * time.Second // MQTT's keep-alive is 16 bits of seconds
	MaxDuration     = 24 * time.Hour      // any other duration
	MaxRestartCount = 100_000
	MaxCertDays     = 36_500 // a certificate's end must stay within X.509's years
)

// containerName is what the engine accepts as a container name.
var containerName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// orEmpty is d, or "" (unset) for 0, for settings that must be positive
// when set.
func orEmpty(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// withinLimits refuses values beyond the limits above, naming each as
// the user gave it, or by the inputs it was derived from (r.shown).
func (c Config) withinLimits(r *reader) error {
	if c.KeepAlive > MaxKeepAlive {
		return fmt.Errorf("%s: at most %s (MQTT's keep-alive is 16 bits of seconds)", r.shown("MTTR_KEEP_ALIVE", c.KeepAlive.String()), MaxKeepAlive)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"MTTR_READY_TIMEOUT", c.ReadyTimeout}, {"MTTR_ENGINE_TIMEOUT", c.EngineTimeout}, {"MTTR_SEND_INTERVAL", c.SendInterval},
		{"MTTR_KEEP_RUNNING", c.KeepRunning}, {"MTTR_KEEP_DEAD", c.KeepDead},
		{"MTTR_RECOVERY_TIMEOUT", c.RecoveryTimeout}, {"MTTR_PING_TIMEOUT", c.PingTimeout},
		{"MTTR_CONNECT_TIMEOUT", c.ConnectTimeout}, {"MTTR_MAX_RECONNECT_INTERVAL", c.MaxReconnectInterval},
		{"MTTR_CONNECT_RETRY_INTERVAL", c.ConnectRetryInterval}, {"MTTR_STORE_GRACE", c.StoreGrace}, {"MTTR_MAX_P95", c.MaxP95}, {"MTTR_C2D_INTERVAL", c.C2DInterval},
	} {
		if d.v > MaxDuration {
			return fmt.Errorf("%s: at most %s", r.shown(d.name, d.v.String()), MaxDuration)
		}
	}
	if c.RestartCount > MaxRestartCount {
		return fmt.Errorf("%s: at most %d", r.shown("MTTR_RESTART_COUNT", strconv.Itoa(c.RestartCount)), MaxRestartCount)
	}
	if c.CertDays > MaxCertDays {
		return fmt.Errorf("%s: at most %d (100 years)", r.shown("MTTR_CERT_DAYS", strconv.Itoa(c.CertDays)), MaxCertDays)
	}
	if !containerName.MatchString(c.Container) {
		return fmt.Errorf("MTTR_CONTAINER=%q: not a container name (letters, digits, _ . -, starting with a letter or digit)", c.Container)
	}
	return nil
}

// BrokerAddrPublished reports whether MTTR_BROKER_ADDR is the broker's
// published port on this machine, MTTR_PORT at MTTR_HOST or a loopback
// address, rather than an address of the user's choosing.
func (c Config) BrokerAddrPublished() bool {
	host, port, err := net.SplitHostPort(c.BrokerAddr)
	if err != nil || port != strconv.Itoa(c.Port) {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return host == c.Host || host == "localhost" || err == nil && ip.IsLoopback()
}

// Vars returns every setting, resolved, keyed by its variable name, as it
// may be stored and shown: the connection string's key is replaced by its
// fingerprint.
func (c Config) Vars() map[string]string {
	d := func(v time.Duration) string { return v.String() }
	seed := ""
	if c.StudySeed != 0 {
		seed = strconv.FormatUint(c.StudySeed, 10)
	}
	maxP95 := ""
	if c.MaxP95 > 0 {
		maxP95 = d(c.MaxP95)
	}
	return map[string]string{
		"MTTR_STUDY":                  c.Study,
		"MTTR_STORE_GRACE":            d(c.StoreGrace),
		"MTTR_STUDY_SEED":             seed,
		"MTTR_HOST":                   c.Host,
		"MTTR_CERT_DIR":               c.CertDir,
		"MTTR_CERT_DAYS":              strconv.Itoa(c.CertDays),
		"MTTR_IMAGE":                  c.Image,
		"MTTR_NODE_IMAGE":             c.NodeImage,
		"MTTR_CONTAINER":              c.Container,
		"MTTR_PORT":                   strconv.Itoa(c.Port),
		"MTTR_BIND":                   c.Bind,
		"MTTR_BROKER_ADDR":            c.BrokerAddr,
		"MTTR_READY_TIMEOUT":          d(c.ReadyTimeout),
		"MTTR_ENGINE_TIMEOUT":         d(c.EngineTimeout),
		"MTTR_KEEP_ALIVE":             d(c.KeepAlive),
		"MTTR_SEND_INTERVAL":          d(c.SendInterval),
		"MTTR_CONNECTION_STRING":      device.RedactConnectionString(c.ConnectionString),
		"MTTR_DEVICES":                strconv.Itoa(c.Devices),
		"MTTR_RESTART_COUNT":          strconv.Itoa(c.RestartCount),
		"MTTR_KEEP_RUNNING":           d(c.KeepRunning),
		"MTTR_KEEP_RUNNING_JITTER":    orEmpty(c.KeepRunningJitter),
		"MTTR_KEEP_DEAD":              d(c.KeepDead),
		"MTTR_FACTOR_OF_KEEP_ALIVE":   strconv.FormatFloat(c.FactorOfKeepAlive, 'g', -1, 64),
		"MTTR_RECOVERY_TIMEOUT":       d(c.RecoveryTimeout),
		"MTTR_FAULT":                  c.Fault,
		"MTTR_BROKER":                 c.Broker,
		"MTTR_NETNS":                  c.NetNS,
		"MTTR_LOSS":                   netfault.FormatLoss(c.Loss),
		"MTTR_LATENCY":                d(c.Latency),
		"MTTR_IDLE_TIMEOUT":           d(c.IdleTimeout),
		"MTTR_JITTER":                 d(c.Jitter),
		"MTTR_RATE":                   netfault.FormatRate(c.Rate),
		"MTTR_LINK":                   c.Link.String(),
		"MTTR_NETFILTER_IMAGE":        c.NetfilterImage,
		"MTTR_PING_TIMEOUT":           d(c.PingTimeout),
		"MTTR_CONNECT_TIMEOUT":        d(c.ConnectTimeout),
		"MTTR_MAX_RECONNECT_INTERVAL": d(c.MaxReconnectInterval),
		"MTTR_CONNECT_RETRY_INTERVAL": d(c.ConnectRetryInterval),
		"MTTR_CLEAN_SESSION":          strconv.FormatBool(c.CleanSession),
		"MTTR_TLS_RESUMPTION":         strconv.FormatBool(c.TLS.Resume),
		"MTTR_TLS_GROUPS":             device.FormatGroups(c.TLS.Groups),
		"MTTR_RESUBSCRIBE":            c.Resubscribe,
		"MTTR_C2D_INTERVAL":           d(c.C2DInterval),
		"MTTR_QOS":                    strconv.Itoa(c.QoS),
		"MTTR_LABEL":                  c.Label,
		"MTTR_CLIENT":                 c.Client,
		"MTTR_CLIENT_CMD":             c.redactKey(c.ClientCmd),
		"MTTR_DB":                     dbref.Shown(c.DB),
		"MTTR_LAST":                   strconv.Itoa(c.Last),
		"MTTR_BASELINE":               c.Baseline,
		"MTTR_ALPHA":                  strconv.FormatFloat(c.Alpha, 'g', -1, 64),
		"MTTR_FORMAT":                 c.Format,
		"MTTR_MAX_P95":                maxP95,
		"MTTR_HTML":                   c.HTML,
	}
}

// redactKey replaces the connection string's key in s by its fingerprint,
// for settings that may carry it (a client command with the key inline).
func (c Config) redactKey(s string) string {
	id, err := device.ParseConnectionString(c.ConnectionString)
	if err != nil || id.SharedAccessKey == "" {
		return s
	}
	for _, form := range device.KeyForms(id.SharedAccessKey) {
		s = strings.ReplaceAll(s, form, device.KeyFingerprint(id.SharedAccessKey))
	}
	return s
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
	given  map[string]string // the settings read, as the user gave them
	from   map[string]string // a derived setting not given: the inputs it came from
}

func (r *reader) get(name string) (string, bool) {
	if r.err != nil {
		return "", false
	}
	v, ok := r.lookup(name)
	v = strings.TrimSpace(v)
	if !ok || v == "" {
		return "", false
	}
	if r.given != nil {
		r.given[name] = v
		delete(r.from, name)
	}
	return v, true
}

// shown names setting name in an error: as the user gave it
// (MTTR_KEEP_ALIVE="70000"), as derived from the inputs the user gave or
// left at their defaults (MTTR_KEEP_DEAD from MTTR_KEEP_ALIVE=15s ×
// MTTR_FACTOR_OF_KEEP_ALIVE="10000"), or with its resolved value.
func (r *reader) shown(name, value string) string {
	if v, ok := r.given[name]; ok {
		return fmt.Sprintf("%s=%q", name, v)
	}
	if from, ok := r.from[name]; ok {
		return fmt.Sprintf("%s=%s", name, from)
	}
	return name + "=" + value
}

// inputs names settings as shown does, for a derived setting's origin.
func (r *reader) inputs(names ...string) string {
	parts := make([]string, len(names))
	for i, n := range names {
		if v, ok := r.given[n]; ok {
			parts[i] = fmt.Sprintf("%s=%q", n, v)
		} else {
			parts[i] = n + " (default)"
		}
	}
	return strings.Join(parts, " and ")
}

// derive sets dst to a duration of ns nanoseconds derived from inputs,
// unless name is given. A value beyond MaxDuration is kept just over it,
// never wrapped into a negative duration, and withinLimits refuses it after
// checking the inputs themselves, naming the inputs and what they gave.
func (r *reader) derive(name string, dst *time.Duration, ns float64, inputs ...string) {
	if r.err != nil {
		return
	}
	val := "beyond any duration"
	if ns < math.MaxInt64 {
		val = time.Duration(ns).String()
	}
	r.from[name] = fmt.Sprintf("%s, from %s", val, r.inputs(inputs...))
	if v, ok := r.lookup(name); ok && strings.TrimSpace(v) != "" {
		return // given: its own value stands
	}
	*dst = time.Duration(min(ns, float64(MaxDuration+1)))
}

func (r *reader) fail(name, value, why string) {
	r.err = fmt.Errorf("%s=%q: %s", name, value, why)
}

// str sets dst when name is set, and reports whether it was.
func (r *reader) str(name string, dst *string) {
	if v, ok := r.get(name); ok {
		*dst = v
	}
}

// parse hands name's value, when set, to set, whose error names the value.
func (r *reader) parse(name string, set func(string) error) {
	if v, ok := r.get(name); ok {
		if err := set(v); err != nil {
			r.err = fmt.Errorf("%s=%w", name, err)
		}
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

func (r *reader) positive(name string, dst *float64) {
	v, ok := r.get(name)
	if !ok {
		return
	}
	f, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil:
		r.fail(name, v, "not a number")
	case !(f > 0) || math.IsInf(f, 0):
		r.fail(name, v, "must be greater than 0")
	default:
		*dst = f
	}
}

func (r *reader) oneOf(name string, dst *string, valid []string) {
	v, ok := r.get(name)
	if !ok {
		return
	}
	if !slices.Contains(valid, v) {
		r.fail(name, v, "want one of "+strings.Join(valid, ", "))
		return
	}
	*dst = v
}

func (r *reader) boolean(name string, dst *bool) {
	v, ok := r.get(name)
	if !ok {
		return
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, v, "want true or false")
		return
	}
	*dst = b
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
