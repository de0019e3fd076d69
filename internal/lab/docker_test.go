package lab

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/certs"
	"github.com/mttrlab/mttr/internal/config"
	"github.com/mttrlab/mttr/internal/device"
	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/mqttprobe"
	"github.com/mttrlab/mttr/internal/needs"
	"github.com/mttrlab/mttr/internal/netfault"
)

// newLab returns a Lab whose names cannot collide with a user's: a random
// image tag and container name, certificates in a temporary directory, and
// a free host port on 127.0.0.1.
func newLab(t *testing.T, host string) (*Lab, *strings.Builder) { return newLabTB(t, host) }

func newLabTB(t testing.TB, host string) (*Lab, *strings.Builder) {
	t.Helper()
	cfg := config.Defaults
	cfg.Host = host
	cfg.CertDir = t.TempDir()
	cfg.CertDays = 1
	cfg.Image = dockertest.Name("mqtt-broker")
	cfg.Container = dockertest.Name("expecto-patronum")
	cfg.NodeImage = dockertest.NodeImage(config.Defaults.NodeImage)
	cfg.Port = dockertest.FreePort(t)
	cfg.BrokerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))
	cfg.ReadyTimeout = 30 * time.Second
	cfg.SendInterval = 20 * time.Millisecond
	out := new(strings.Builder)
	return &Lab{Config: cfg, Out: out, BuildDir: filepath.Join("..", "..", "aedes")}, out
}

// build builds l's image and removes it (and l's container) when the test ends.
func build(t *testing.T, l *Lab) { buildTB(t, l) }

func buildTB(t testing.TB, l *Lab) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		quiet := *l
		quiet.Out = io.Discard
		_ = quiet.Down(ctx)
		_ = quiet.RemoveImage(ctx)
	})
	if err := l.Image(ctx); err != nil {
		t.Fatalf("image: %v", err)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// sendUntil runs Send until n messages are acknowledged.
func sendUntil(t *testing.T, l *Lab, n int) SendSummary {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	counted := *l
	counted.Out = &ackCounter{w: l.Out, n: n, done: cancel}
	sum, err := counted.Send(ctx)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if sum.Acked < n || len(sum.Latencies) != sum.Acked || sum.Sent < sum.Acked {
		t.Fatalf("send summary %+v, want at least %d acknowledged", sum, n)
	}
	return sum
}

type ackCounter struct {
	w    io.Writer
	n    int
	done func()
}

func (a *ackCounter) Write(p []byte) (int, error) {
	if a.n -= strings.Count(string(p), " acknowledged in "); a.n <= 0 {
		a.done()
	}
	return a.w.Write(p)
}

// brokerEvents reads the broker's JSON log lines.
func brokerEvents(t *testing.T, eng *broker.Engine, container string) []map[string]any {
	t.Helper()
	logs, err := eng.Logs(testCtx(t), container, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var evs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("broker log line %q is not JSON: %v", sc.Text(), err)
		}
		if _, ok := m["ts"].(float64); !ok {
			t.Errorf("broker log line %q has no numeric ts", sc.Text())
		}
		evs = append(evs, m)
	}
	return evs
}

func hasEvent(evs []map[string]any, event, clientID string) bool {
	for _, e := range evs {
		if e["event"] == event && (clientID == "" || e["clientId"] == clientID) {
			return true
		}
	}
	return false
}

func TestDockerBrokerLifecycle(t *testing.T) {
	t.Parallel()
	eng := dockertest.Engine(t)
	l, out := sharedLab(t)
	ctx := testCtx(t)

	img, err := eng.InspectImage(ctx, l.Config.Image)
	if err != nil {
		t.Fatal(err)
	}
	_, fp, err := certs.Load(certs.For(l.Config.CertDir, "localhost").CertPath)
	if err != nil {
		t.Fatal(err)
	}
	source, err := broker.SourceDigest(l.BuildDir)
	if err != nil {
		t.Fatal(err)
	}
	if img.Host != "localhost" || img.Fingerprint != fp || img.Source != source {
		t.Errorf("image labels host %q fingerprint %q source %q, want localhost %s %s", img.Host, img.Fingerprint, img.Source, fp, source)
	}

	if err := l.Up(ctx); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "ready at "+l.Config.BrokerAddr) {
		t.Errorf("up printed no readiness line:\n%s", out)
	}
	sendUntil(t, l, 3)

	// 200 ms each way: every message waits at least 400 ms for its PUBACK.
	t.Run("send through a link", func(t *testing.T) {
		slow := *l
		slow.Config.Link = netfault.Link{Latency: 200 * time.Millisecond}
		sum := sendUntil(t, &slow, 3)
		for i, d := range sum.Latencies {
			if d < 2*slow.Config.Link.Latency {
				t.Errorf("message %d acknowledged in %v through a %v link, want ≥ %v", i+1, d, slow.Config.Link.Latency, 2*slow.Config.Link.Latency)
			}
		}
		slow.Config.Link.Loss = 0.1
		if _, err := slow.Send(t.Context()); err == nil || !strings.Contains(err.Error(), "MTTR_LINK=") {
			t.Errorf("send with a lossy link: %v, want a refusal naming MTTR_LINK", err)
		}
	})

	t.Run("certificate for another host is rejected", func(t *testing.T) {
		other := certs.For(t.TempDir(), "localhost")
		if _, err := certs.Generate(other, 1); err != nil {
			t.Fatal(err)
		}
		pool, err := certs.Pool(other.CertPath)
		if err != nil {
			t.Fatal(err)
		}
		d, err := device.New(device.Config{
			Identity:   device.Identity{HostName: "localhost", DeviceID: "intruder", SharedAccessKey: "Zm9vYmFy"},
			BrokerAddr: l.Config.BrokerAddr,
			TLS:        &tls.Config{RootCAs: pool, ServerName: "localhost"},
			Timings:    device.Timings{KeepAlive: 15 * time.Second, PingTimeout: 10 * time.Second, ConnectTimeout: 10 * time.Second, MaxReconnectInterval: time.Second, ConnectRetryInterval: time.Second},
			QoS:        1,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		if err := d.Connect(testCtx(t)); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("connect with a foreign certificate = %v, want a certificate error", err)
		}
	})

	t.Run("mosquitto_pub trusts the certificate", func(t *testing.T) {
		bin, err := exec.LookPath("mosquitto_pub")
		if err != nil {
			needs.Mosquitto.Missing(t, "mosquitto_pub is not installed (Debian: mosquitto-clients)")
		}
		cert := certs.For(l.Config.CertDir, "localhost").CertPath
		cmd := exec.CommandContext(testCtx(t), bin, "-h", "localhost", "-p", strconv.Itoa(l.Config.Port),
			"--cafile", cert, "-i", "mosquitto-check", "-q", "1", "-t", "devices/mosquitto-check/messages/events/", "-m", "{}")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub --cafile %s: %v\n%s", cert, err, out)
		}
	})

	if err := eng.Stop(ctx, l.Config.Container, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	evs := brokerEvents(t, eng, l.Config.Container)
	for _, want := range []struct{ event, client string }{
		{"listening", ""}, {"connect", "devicemtr"}, {"publish", "mosquitto-check"}, {"publish", "devicemtr"}, {"disconnect", "devicemtr"}, {"shutdown", ""},
	} {
		if !hasEvent(evs, want.event, want.client) {
			t.Errorf("broker logged no %q event for %q", want.event, want.client)
		}
	}
	for _, e := range evs {
		if e["event"] == "publish" && e["clientId"] == "devicemtr" && e["qos"] != float64(1) {
			t.Errorf("publish event %v is not QoS 1", e)
		}
		if id, _ := e["clientId"].(string); strings.HasPrefix(id, "mttr-warmup-") {
			t.Errorf("the broker logged its own warm-up client: %v", e)
		}
	}
	if evs[0]["event"] != "listening" {
		t.Errorf("first broker event %v, want listening (after the warm-up)", evs[0])
	}

	if err := l.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Find(ctx, l.Config.Container); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("container still there after down: %v", err)
	}
	out.Reset()
	if err := l.Down(ctx); err != nil || !strings.Contains(out.String(), "nothing to remove") {
		t.Errorf("second down = %v, printed %q", err, out)
	}
}

// TestDockerRemoveImage removes an image that a container uses, then
// one that none uses, then one that is not there. It builds an image of
// its own.
func TestDockerRemoveImage(t *testing.T) {
	t.Parallel()
	dockertest.Engine(t)
	l, out := newLab(t, "localhost")
	build(t, l)
	ctx := testCtx(t)
	if err := l.Up(ctx); err != nil {
		t.Fatal(err)
	}
	err := l.RemoveImage(ctx)
	if err == nil || !strings.Contains(err.Error(), "still used by container "+l.Config.Container) {
		t.Fatalf("remove image in use = %v, want it to name the container", err)
	}
	if err := l.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveImage(ctx); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := l.RemoveImage(ctx); err != nil || !strings.Contains(out.String(), "is not present") {
		t.Errorf("removing an absent image = %v, printed %q", err, out)
	}
	if err := l.Up(ctx); err == nil || !strings.Contains(err.Error(), "build it with `mage image`") {
		t.Errorf("up without an image = %v, want it to name `mage image`", err)
	}
}

func TestDockerRefusals(t *testing.T) {
	t.Parallel()
	eng := dockertest.Engine(t)
	l, _ := sharedLab(t)
	ctx := testCtx(t)

	t.Run("host port busy", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		busy := *l
		busy.Config.Port = ln.Addr().(*net.TCPAddr).Port
		err = busy.Up(ctx)
		if err == nil || !strings.Contains(err.Error(), "host port "+strconv.Itoa(busy.Config.Port)) {
			t.Fatalf("up on a busy port = %v, want it to name the port", err)
		}
		if _, err := eng.Find(ctx, l.Config.Container); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("failed start left a container behind: %v", err)
		}
	})

	t.Run("container that is not ours", func(t *testing.T) {
		foreign := dockertest.Name("foreign")
		id := dockertest.CreateForeign(t, foreign, l.Config.NodeImage)
		other := *l
		other.Config.Container = foreign
		for name, run := range map[string]func() error{
			"up":   func() error { return other.Up(ctx) },
			"down": func() error { return other.Down(ctx) },
		} {
			if err := run(); err == nil || !strings.Contains(err.Error(), "refusing to touch it") {
				t.Errorf("%s on a foreign container = %v, want a refusal", name, err)
			}
		}
		if !dockertest.Exists(t, id) {
			t.Error("the foreign container was removed")
		}
	})

	t.Run("never ready", func(t *testing.T) {
		unreachable := *l
		unreachable.Config.BrokerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(dockertest.FreePort(t)))
		unreachable.Config.ReadyTimeout = 300 * time.Millisecond
		err := unreachable.Up(ctx)
		if err == nil || !strings.Contains(err.Error(), "not ready within 300ms (MTTR_READY_TIMEOUT)") {
			t.Fatalf("up with nothing at MTTR_BROKER_ADDR = %v", err)
		}
		if _, err := eng.Find(ctx, l.Config.Container); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("a broker that never became ready was left behind: %v", err)
		}
	})

	t.Run("stale image", func(t *testing.T) {
		stale := *l
		stale.Out = io.Discard
		stale.Config.CertDir = t.TempDir() // a certificate newer than the shared image's
		if err := stale.Certs(ctx, "localhost"); err != nil {
			t.Fatal(err)
		}
		err := stale.Up(ctx)
		if err == nil || !strings.Contains(err.Error(), "rebuild it with `mage image`") {
			t.Fatalf("up with a newer certificate than the image's = %v", err)
		}
	})
}

func TestDockerBuildFailureNamesStep(t *testing.T) {
	t.Parallel()
	dockertest.Engine(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY certs/ /certs/\nRUN false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, _ := newLab(t, "localhost")
	l.BuildDir = dir
	t.Cleanup(func() { quiet := *l; quiet.Out = io.Discard; _ = quiet.RemoveImage(context.Background()) })
	err := l.Image(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), ": RUN false: ") || !strings.Contains(err.Error(), "Step 3/") {
		t.Fatalf("build = %v, want an error naming step 3, RUN false", err)
	}
}

// TestDockerDifferentHost reaches the engine over TCP on loopback, builds
// the broker with a certificate for alohomora.net and has the device dial
// 127.0.0.1 while verifying alohomora.net.
func TestDockerDifferentHost(t *testing.T) {
	if !inOwnProcess(t, true) {
		return
	}
	t.Setenv("DOCKER_HOST", dockertest.TCPProxy(t))
	t.Setenv("DOCKER_TLS_VERIFY", "")
	l, out := newLab(t, "alohomora.net")
	l.Config.ConnectionString = "HostName=alohomora.net;DeviceId=remote-device;SharedAccessKey=Zm9vYmFy"
	build(t, l)
	if !strings.Contains(out.String(), " on "+os.Getenv("DOCKER_HOST")) {
		t.Errorf("image was not built through %s:\n%s", os.Getenv("DOCKER_HOST"), out)
	}
	ctx := testCtx(t)
	if err := l.Up(ctx); err != nil {
		t.Fatal(err)
	}
	sendUntil(t, l, 2)

	eng, err := broker.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	clock, err := eng.MeasureClock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Same machine, reached over TCP: treated as remote, offset near zero.
	if clock.Local || clock.Uncertainty <= 0 || clock.Offset.Abs() > 100*time.Millisecond+clock.Uncertainty {
		t.Errorf("clock over TCP: %+v", clock)
	}

	wrongName := *l
	wrongName.Config.Host = "localhost"
	if _, err := wrongName.tlsConfig(); err == nil {
		t.Error("found a certificate for localhost in a directory that only holds alohomora.net's")
	}
}

// TestDockerOldKitCommand runs the image the way the old kit did, `docker
// run -d --publish 8883:8883 --name expecto-patronum mqtt-broker` (here on
// a free port of 127.0.0.1): the broker answers over verified TLS with the
// image's own settings, and `mage down` treats the container as ours.
func TestDockerOldKitCommand(t *testing.T) {
	t.Parallel()
	eng := dockertest.Engine(t)
	l, _ := sharedLab(t)
	dockertest.RunLikeCLI(t, l.Config.Container, l.Config.Image, l.Config.Port)
	tlsConf, err := l.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := eng.Find(testCtx(t), l.Config.Container)
	if err != nil {
		t.Fatalf("find a container started by hand: %v", err)
	}
	if c.NetNS != broker.NetNSPlain || c.Port != l.Config.Port {
		t.Errorf("container by hand: %+v", c)
	}
	if _, err := eng.WaitReady(testCtx(t), c, l.Config.BrokerAddr, tlsConf, mqttprobe.ProbeInterval); err != nil {
		t.Fatalf("the broker started by hand does not answer: %v", err)
	}
	if err := l.Down(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Find(testCtx(t), l.Config.Container); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("after down: %v", err)
	}
}

// TestDockerLiveRunContainerUntouched gives mttr, up and down the name of a
// container that a run still running on this machine owns (this test's own
// process stands in for it): each refuses, naming the run, and the
// container is left as it was.
func TestDockerLiveRunContainerUntouched(t *testing.T) {
	t.Parallel()
	eng := dockertest.Engine(t)
	base, _ := sharedLab(t)
	owner := shortRun(t, base, "stop")
	labels := runLabels(7) // owned by this very process, which is alive
	c, err := eng.Run(testCtx(t), broker.RunSpec{Name: owner.Config.Container, Image: owner.Config.Image, Bind: "127.0.0.1",
		Port: owner.Config.Port, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Remove(context.Background(), owner.Config.Container) })

	second := shortRun(t, base, "stop")
	second.Config.Container = owner.Config.Container
	_, mttrErr := second.Mttr(testCtx(t))
	for name, err := range map[string]error{"mttr": mttrErr, "up": second.Up(testCtx(t)), "down": second.Down(testCtx(t))} {
		if err == nil || !strings.Contains(err.Error(), "belongs to run 7, which is still running") || !strings.Contains(err.Error(), "MTTR_CONTAINER and MTTR_PORT") {
			t.Errorf("%s on a live run's container = %v", name, err)
		}
	}
	still, err := eng.Find(testCtx(t), owner.Config.Container)
	if err != nil || still.ID != c.ID {
		t.Errorf("the live run's container was touched: %v, %v", still, err)
	}
	if runs, err := readStore(t, second.Config.DB).Runs(testCtx(t), 10); err != nil || len(runs) != 0 {
		t.Errorf("the refused run was recorded: %v, %v", runs, err)
	}
}
