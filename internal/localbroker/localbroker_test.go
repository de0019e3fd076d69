package localbroker

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/certs"
	"github.com/mttrlab/mttr/internal/mqttprobe"
	"github.com/mttrlab/mttr/internal/needs"
)

// childEnv, when set, makes the test binary a parent that starts a broker
// and waits to be killed: "<app dir> <addr> <cert.pem> <key.pem>".
const childEnv = "MTTR_TEST_LOCALBROKER_PARENT"

// warmUpEnv, when set, makes the test binary check starting brokers in
// the network namespace it runs in (checkWarmUp, Linux only): "<app dir>
// <cert.pem> <key.pem>".
const warmUpEnv = "MTTR_TEST_LOCALBROKER_WARMUP"

// sourceDir holds the broker sources the product ships.
const sourceDir = "../../aedes"

// cacheRoot is this test binary's install cache, so npm ci runs once per
// binary.
var cacheRoot string

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runParent(spec))
	}
	if spec := os.Getenv(warmUpEnv); spec != "" {
		os.Exit(checkWarmUp(spec))
	}
	dir, err := os.MkdirTemp("", "localbroker-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cacheRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runParent starts a broker, prints "ready <pid>" once it listens, and
// waits to be killed. It sends the broker no connection, so that the
// broker writes nothing afterwards: a write to the pipe of a dead parent
// would kill it with EPIPE, and the test would prove nothing.
func runParent(spec string) int {
	var dir, addr, cert, key string
	if _, err := fmt.Sscan(spec, &dir, &addr, &cert, &key); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	listening := make(chan struct{}, 1)
	events := func(e brokerlog.Event) {
		if e.Kind == brokerlog.Listening {
			listening <- struct{}{}
		}
	}
	b, err := Start(context.Background(), Spec{AppDir: dir, Addr: addr, CertFile: cert, KeyFile: key, Events: events, Stderr: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	select {
	case <-listening:
	case <-time.After(20 * time.Second):
		fmt.Fprintln(os.Stderr, "broker not listening after 20 s")
		return 1
	}
	fmt.Printf("ready %d\n", b.current().pid)
	time.Sleep(time.Hour)
	return 0
}

// needNode skips the test in -short mode or when node or npm is missing,
// unless MTTR_REQUIRE_NODE=1.
func needNode(t *testing.T) {
	t.Helper()
	needs.Node.Short(t)
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			needs.Node.Missing(t, err.Error())
		}
	}
}

var install struct {
	once     sync.Once
	dir      string
	progress string
	err      error
}

// appDir returns the broker installed once for this test binary.
func appDir(t *testing.T) string {
	t.Helper()
	needNode(t)
	install.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		var out bytes.Buffer
		install.dir, install.err = Prepare(ctx, sourceDir, cacheRoot, &out)
		install.progress = out.String()
	})
	if install.err != nil {
		t.Fatalf("%v\n%s", install.err, install.progress)
	}
	return install.dir
}

// fixture is what a broker test needs: a certificate, a trusting client
// TLS config and a free loopback address.
type fixture struct {
	dir       string
	cert, key string
	tls       *tls.Config
	addr      string
	events    *recorder
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := appDir(t)
	pair := certs.For(t.TempDir(), "localhost")
	if _, err := certs.Generate(pair, 1); err != nil {
		t.Fatal(err)
	}
	pool, err := certs.Pool(pair.CertPath)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{
		dir:    dir,
		cert:   pair.CertPath,
		key:    pair.KeyPath,
		tls:    &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12},
		addr:   freeAddr(t),
		events: newRecorder(),
	}
}

func (f *fixture) spec(env ...string) Spec {
	return Spec{AppDir: f.dir, Addr: f.addr, CertFile: f.cert, KeyFile: f.key, Env: env, Events: f.events.add, Stderr: os.Stderr}
}

// start starts a broker and waits until it answers.
func (f *fixture) start(t *testing.T, env ...string) *Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := Start(ctx, f.spec(env...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(func() { f.explain(t, b) })
	if _, err := b.WaitReady(ctx, f.tls, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	return b
}

// explain logs, when t failed, whether b's process still runs (with its
// last output if not) and every broker event line of the test.
func (f *fixture) explain(t *testing.T, b *Broker) {
	if !t.Failed() {
		return
	}
	t.Logf("at the failure (%s): %s", time.Now().Format(time.StampMicro), processState(b))
	f.events.mu.Lock()
	defer f.events.mu.Unlock()
	for _, e := range f.events.events {
		t.Logf("broker event %s %s %s", e.At.Format(time.StampMicro), e.Kind, e.ClientID)
	}
}

// processState says whether b's process runs, and what it left behind if
// it exited.
func processState(b *Broker) string {
	p := b.current()
	if p == nil {
		return "no broker process"
	}
	if err := p.alive(); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("broker process %d running", p.pid)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// recorder keeps broker events and signals each arrival.
type recorder struct {
	mu      sync.Mutex
	events  []brokerlog.Event
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) add(e brokerlog.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// count returns how many events of kind arrived at or after since.
func (r *recorder) count(kind string, since time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == kind && !e.At.Before(since) {
			n++
		}
	}
	return n
}

// await waits until at least n events of kind arrived at or after since.
func (r *recorder) await(t *testing.T, kind string, since time.Time, n int) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for r.count(kind, since) < n {
		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("%d %q event(s) since %s, want %d", r.count(kind, since), kind, since.Format(time.StampMicro), n)
		}
	}
}

func TestPrepareReusesInstall(t *testing.T) {
	dir := appDir(t)
	if !strings.Contains(install.progress, "installing aedes with npm ci") {
		t.Errorf("first Prepare's progress does not say it installed:\n%s", install.progress)
	}
	if rel, err := filepath.Rel(cacheRoot, dir); err != nil || strings.Contains(rel, "..") {
		t.Errorf("install %s is not under the cache root %s", dir, cacheRoot)
	}
	// Without npm on PATH, only a reuse can succeed.
	t.Setenv("PATH", nodeOnlyPath(t))
	var out bytes.Buffer
	again, err := Prepare(t.Context(), sourceDir, cacheRoot, &out)
	if err != nil {
		t.Fatal(err)
	}
	if again != dir {
		t.Errorf("second Prepare returned %s, want %s", again, dir)
	}
	if !strings.Contains(out.String(), "reusing aedes installed in "+dir) {
		t.Errorf("second Prepare's progress = %q, want it to say it reused %s", out.String(), dir)
	}
}

// nodeOnlyPath returns a PATH with node and nothing else.
func nodeOnlyPath(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := os.Symlink(node, filepath.Join(bin, "node")); err != nil {
		t.Fatal(err)
	}
	return bin
}

// otherSources copies the broker sources with a changed server.js, so that
// they install into a directory of their own.
func otherSources(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range Sources {
		data, err := os.ReadFile(filepath.Join(sourceDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "server.js" {
			data = append(data, []byte("// "+t.Name()+"\n")...)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// cancelOn cancels a context once a line containing text was written.
type cancelOn struct {
	text   string
	cancel context.CancelFunc
	mu     sync.Mutex
	buf    bytes.Buffer
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if strings.Contains(c.buf.String(), c.text) {
		c.cancel()
	}
	return len(p), nil
}

// TestWarmUpSkippedWithoutTempDir: a broker that cannot make its warm-up
// socket (its temporary directory is a file) says so on stderr and serves
// all the same.
func TestWarmUpSkippedWithoutTempDir(t *testing.T) {
	f := newFixture(t)
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	said, saw := context.WithCancel(t.Context())
	defer saw()
	spec := f.spec("TMPDIR=" + notDir)
	spec.Stderr = &cancelOn{text: "warm-up skipped", cancel: saw}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	b, err := Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	if _, err := b.WaitReady(ctx, f.tls, 5*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	select {
	case <-said.Done():
	case <-ctx.Done():
		t.Fatal("the broker served without a word on stderr of its skipped warm-up")
	}
}

// TestPrepareInterruptedInstallDoesNotCount interrupts an npm that has
// begun to fill node_modules (a stand-in that then hangs), and expects
// neither an install nor its temporary directory left, and the next
// Prepare to install for real.
func TestPrepareInterruptedInstallDoesNotCount(t *testing.T) {
	needNode(t)
	src := otherSources(t)
	root := t.TempDir()
	path := os.Getenv("PATH")
	fake := t.TempDir()
	script := "#!/bin/sh\nmkdir -p node_modules/aedes\necho halfway\nexec sleep 60\n"
	if err := os.WriteFile(filepath.Join(fake, "npm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fake+string(os.PathListSeparator)+path)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	interrupt, stop := context.WithCancel(ctx)
	defer stop()
	begin := time.Now()
	dir, err := Prepare(interrupt, src, root, &cancelOn{text: "halfway", cancel: stop})
	if err == nil {
		t.Fatalf("an interrupted Prepare installed %s", dir)
	}
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "prepare broker: npm ci: ") {
		t.Fatalf("Prepare: %v, want it to say npm ci was cancelled", err)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("cancelling took %s: npm's process group was not killed", d)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("interrupted install left %s", e.Name())
	}

	t.Setenv("PATH", path)
	var out bytes.Buffer
	if _, err := Prepare(ctx, src, root, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "installing aedes") {
		t.Errorf("Prepare after an interrupted install did not install:\n%s", out.String())
	}
}

func TestPrepareSaysWhatToInstall(t *testing.T) {
	needNode(t)
	tests := []struct {
		name, path, want string
	}{
		{"no node", t.TempDir(), "node not found on PATH: install Node.js 20 or newer"},
		{"no npm", nodeOnlyPath(t), "npm not found on PATH: install npm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PATH", tt.path)
			_, err := Prepare(t.Context(), otherSources(t), t.TempDir(), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "prepare broker: ") {
				t.Errorf("Prepare: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestStartWaitReady(t *testing.T) {
	f := newFixture(t)
	before := time.Now()
	b := f.start(t)
	if b.Addr() != f.addr {
		t.Errorf("Addr() = %s, want %s", b.Addr(), f.addr)
	}
	if s := b.StartedAt(); s.Before(before) || s.After(time.Now()) {
		t.Errorf("StartedAt() = %s, not within the test", s)
	}
	f.events.await(t, brokerlog.Listening, before, 1)
	// The probe's CONNECT is logged; its stamp is when we read it.
	f.events.await(t, brokerlog.Connect, before, 1)
	f.events.mu.Lock()
	defer f.events.mu.Unlock()
	for _, e := range f.events.events {
		if e.At.Before(before) || e.At.After(time.Now()) {
			t.Errorf("%s event stamped %s, outside the test", e.Kind, e.At)
		}
	}
}

func TestStartRefusesBadSpecs(t *testing.T) {
	tests := []struct {
		addr string
		want string
	}{
		{"0.0.0.0:8883", "is not a loopback address"},
		{"192.0.2.1:8883", "is not a loopback address"},
		{"localhost:8883", "the host must be an IP address"},
		{"127.0.0.1:0", "the port must be a number from 1 to 65535"},
		{"127.0.0.1", "missing port"},
	}
	for _, tt := range tests {
		_, err := Start(t.Context(), Spec{AppDir: t.TempDir(), Addr: tt.addr, CertFile: "c", KeyFile: "k"})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Start(addr %q): %v, want an error containing %q", tt.addr, err, tt.want)
		}
	}
}

func TestWaitReadyFailsAtOnceWhenTheBrokerExits(t *testing.T) {
	f := newFixture(t)
	l, err := net.Listen("tcp", f.addr) // the broker cannot listen there
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b, err := Start(t.Context(), f.spec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err = b.WaitReady(ctx, f.tls, 5*time.Millisecond)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("WaitReady: %v (context: %v), want the broker's exit", err, ctx.Err())
	}
	for _, want := range []string{"exited (exit status 1)", "EADDRINUSE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("WaitReady: %v, want it to contain %q", err, want)
		}
	}
}

func TestOutage(t *testing.T) {
	for _, mode := range []string{FaultStop, FaultKill, FaultPause} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			b := f.start(t)
			o, err := b.Outage(mode, f.tls)
			if err != nil {
				t.Fatal(err)
			}
			if o.Instant() {
				t.Error("Instant() = true")
			}
			for cycle := range 2 {
				pid := b.current().pid
				before := time.Now()
				faultAt, err := o.Inject(t.Context())
				if err != nil {
					t.Fatalf("cycle %d: %v", cycle, err)
				}
				if faultAt.Before(before) || faultAt.After(time.Now()) {
					t.Errorf("cycle %d: fault at %s, outside Inject", cycle, faultAt)
				}
				assertDown(t, mode, b, pid, f)

				healedAt, err := o.Heal(t.Context())
				if err != nil {
					t.Fatalf("cycle %d: %v", cycle, err)
				}
				if healedAt.Before(faultAt) {
					t.Errorf("cycle %d: fault %s, healed %s: out of order", cycle, faultAt, healedAt)
				}
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				readyAt, err := o.Ready(ctx)
				cancel()
				if err != nil {
					t.Fatalf("cycle %d: %v", cycle, err)
				}
				if readyAt.Before(healedAt) {
					t.Errorf("cycle %d: ready %s before healed %s", cycle, readyAt, healedAt)
				}
				if mode == FaultPause {
					if got := b.current().pid; got != pid {
						t.Errorf("cycle %d: pause replaced process %d with %d", cycle, pid, got)
					}
					continue
				}
				// A new process, on the same Events.
				if got := b.current().pid; got == pid {
					t.Errorf("cycle %d: still process %d after %s", cycle, pid, mode)
				}
				f.events.await(t, brokerlog.Listening, healedAt, 1)
				if mode == FaultStop {
					// Its time can be the line's own, in whole milliseconds
					// (brokerlog.Stamp): up to 1 ms before the signal.
					f.events.await(t, brokerlog.Shutdown, before.Add(-time.Millisecond), 1)
				}
			}
		})
	}
}

// assertDown checks that the broker does not answer after a fault.
func assertDown(t *testing.T, mode string, b *Broker, pid int, f *fixture) {
	t.Helper()
	switch mode {
	case FaultStop, FaultKill:
		if p := b.current(); p != nil {
			t.Errorf("process %d still current after %s", p.pid, mode)
		}
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group %d after %s: kill 0 = %v, want ESRCH", pid, mode, err)
		}
		if _, err := b.WaitReady(t.Context(), f.tls, 5*time.Millisecond); err == nil {
			t.Errorf("WaitReady succeeded after %s", mode)
		}
	case FaultPause:
		// A stopped broker accepts TCP (the kernel does) but never answers.
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		if err := mqttprobe.Probe(ctx, f.addr, f.tls); err == nil {
			t.Error("a paused broker answered a probe")
		}
	}
}

func TestOutageRefusesWhatNeedsDocker(t *testing.T) {
	b := &Broker{}
	for _, mode := range []string{"restart", "recreate", "disconnect"} {
		_, err := b.Outage(mode, nil)
		want := fmt.Sprintf("fault %q needs Docker: MTTR_BROKER=process supports stop, kill and pause", mode)
		if err == nil || err.Error() != want {
			t.Errorf("Outage(%q): %v, want %q", mode, err, want)
		}
	}
	if _, err := b.Outage("explode", nil); err == nil || err.Error() != `fault "explode": unknown` {
		t.Errorf(`Outage("explode"): %v`, err)
	}
}

func TestCloseLeavesNoProcess(t *testing.T) {
	for _, state := range []string{"running", FaultPause, FaultStop} {
		t.Run(state, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			b := f.start(t)
			pid := b.current().pid
			if state != "running" {
				o, err := b.Outage(state, f.tls)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := o.Inject(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			begin := time.Now()
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(begin); d > closeGrace {
				t.Errorf("Close took %s: the broker did not exit on SIGTERM", d)
			}
			if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("process group %d after Close: kill 0 = %v, want ESRCH", pid, err)
			}
			if err := b.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			o, err := b.Outage(FaultKill, f.tls)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := o.Heal(t.Context()); err == nil {
				t.Error("Heal after Close started a broker")
			}
		})
	}
}

// TestVerifierSessionQueuesBeforeFirstConnect shows that with
// MQTT_VERIFIER_ID and MQTT_VERIFIER_TOPIC the broker keeps QoS 1
// messages for a verifier that has never connected to this broker
// process, and delivers them when it connects with a persistent session,
// after a start and after a restart.
func TestVerifierSessionQueuesBeforeFirstConnect(t *testing.T) {
	const (
		verifier = "devicemtr-verifier"
		topic    = "devices/+/messages/events/"
		n        = 20
	)
	f := newFixture(t)
	b := f.start(t, "MQTT_VERIFIER_ID="+verifier, "MQTT_VERIFIER_TOPIC="+topic)

	publish(t, f, "devicemtr", "devices/devicemtr/messages/events/", "start", n)
	receive(t, f, verifier, "start", n)

	o, err := b.Outage(FaultStop, f.tls)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Inject(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Heal(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Ready(t.Context()); err != nil {
		t.Fatal(err)
	}
	publish(t, f, "devicemtr-2", "devices/devicemtr-2/messages/events/", "restart", n)
	receive(t, f, verifier, "restart", n)

	// Control: a client id the broker was not told about has no session.
	c := connect(t, f, "someone-else", false, false, nil)
	c.Disconnect(0)
}

func clientOptions(f *fixture, id string, clean bool) *paho.ClientOptions {
	return paho.NewClientOptions().
		AddBroker("ssl://" + f.addr).
		SetTLSConfig(f.tls).
		SetClientID(id).
		SetCleanSession(clean).
		SetKeepAlive(10 * time.Second).
		SetPingTimeout(5 * time.Second).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false)
}

// connect connects id and checks the CONNACK's session-present flag.
func connect(t *testing.T, f *fixture, id string, clean, wantSession bool, handler paho.MessageHandler) paho.Client {
	t.Helper()
	opts := clientOptions(f, id, clean)
	if handler != nil {
		opts.SetDefaultPublishHandler(handler)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("%s: connect timed out", id)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: connect: %v", id, err)
	}
	if got := tok.(*paho.ConnectToken).SessionPresent(); got != wantSession {
		t.Errorf("%s: session present = %t, want %t", id, got, wantSession)
	}
	return c
}

// publish sends n QoS 1 messages "<prefix>-<i>" and waits for each PUBACK.
func publish(t *testing.T, f *fixture, id, topic, prefix string, n int) {
	t.Helper()
	c := connect(t, f, id, true, false, nil)
	defer c.Disconnect(0)
	for i := range n {
		tok := c.Publish(topic, 1, false, fmt.Sprintf("%s-%d", prefix, i))
		if !tok.WaitTimeout(5 * time.Second) {
			t.Fatalf("%s: publish %d timed out", id, i)
		}
		if err := tok.Error(); err != nil {
			t.Fatalf("%s: publish %d: %v", id, i, err)
		}
	}
}

// receive connects the verifier with a persistent session, subscribing to
// nothing, and expects the n messages "<prefix>-<i>" queued for it.
func receive(t *testing.T, f *fixture, id, prefix string, n int) {
	t.Helper()
	got := make(chan string, 4*n)
	c := connect(t, f, id, false, true, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	defer c.Disconnect(0)
	seen := map[string]bool{}
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for len(seen) < n {
		select {
		case p := <-got:
			if !strings.HasPrefix(p, prefix+"-") {
				t.Errorf("%s: unexpected message %q", id, p)
			}
			seen[p] = true
		case <-deadline.C:
			t.Fatalf("%s: got %d of %d queued messages: %v", id, len(seen), n, seen)
		}
	}
}
