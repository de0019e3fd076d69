package broker_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/certs"
	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/mqttprobe"
)

// testImage is the broker image the Docker tests share: built once, on
// first use, and removed when the tests end.
var testImage struct {
	once sync.Once
	tag  string
	tls  *tls.Config
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testImage.tag != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if eng, err := broker.Connect(ctx); err == nil {
			if err := eng.RemoveImage(ctx, testImage.tag); err != nil && !errors.Is(err, broker.ErrNotFound) {
				fmt.Fprintln(os.Stderr, "remove test image:", err)
			}
			eng.Close()
		}
		cancel()
	}
	os.Exit(code)
}

// image returns the engine, the shared test image and a TLS configuration
// that verifies its certificate. It skips the test when no engine answers.
func image(t testing.TB) (*broker.Engine, string, *tls.Config) {
	t.Helper()
	eng := dockertest.Engine(t)
	testImage.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		dir, err := os.MkdirTemp("", "mttr-broker-test-")
		if err != nil {
			testImage.err = err
			return
		}
		defer os.RemoveAll(dir)
		testImage.tls, testImage.err = buildImage(ctx, eng, dir, dockertest.Name("mqtt-broker"))
	})
	if testImage.err != nil {
		t.Fatalf("test image: %v", testImage.err)
	}
	return eng, testImage.tag, testImage.tls
}

// buildImage builds the broker image tag from ../../aedes with a fresh
// certificate for localhost made in dir.
func buildImage(ctx context.Context, eng *broker.Engine, dir, tag string) (*tls.Config, error) {
	pair := certs.For(dir, "localhost")
	fp, err := certs.Generate(pair, 1)
	if err != nil {
		return nil, err
	}
	buildDir := filepath.Join("..", "..", "aedes")
	source, err := broker.SourceDigest(buildDir)
	if err != nil {
		return nil, err
	}
	testImage.tag = tag // removed by TestMain even when the build fails half way
	_, err = eng.Build(ctx, broker.BuildSpec{
		Dir:         buildDir,
		Tag:         tag,
		NodeImage:   dockertest.NodeImage("node:24-slim"),
		Cert:        pair,
		Fingerprint: fp,
		Source:      source,
	}, io.Discard)
	if err != nil {
		return nil, err
	}
	pool, err := certs.Pool(pair.CertPath)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}, nil
}

// run starts a broker in mode on a free port, removes it (and its holder)
// when the test ends, and waits until it answers.
func run(t testing.TB, ctx context.Context, eng *broker.Engine, img string, tlsConf *tls.Config, mode string) (broker.RunSpec, *broker.Container) {
	t.Helper()
	spec := broker.RunSpec{
		Name:   dockertest.Name("expecto-patronum"),
		Image:  img,
		Bind:   "127.0.0.1",
		Port:   dockertest.FreePort(t),
		NetNS:  mode,
		Labels: map[string]string{"org.mttrlab.test": t.Name()},
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := eng.Remove(ctx, spec.Name); err != nil && !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("cleanup: %v", err)
		}
	})
	c, err := eng.Run(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.WaitReady(ctx, c, "", tlsConf, mqttprobe.ProbeInterval); err != nil {
		t.Fatal(err)
	}
	return spec, c
}

func TestDockerRunHolder(t *testing.T) {
	eng, img, tlsConf := image(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	spec, c := run(t, ctx, eng, img, tlsConf, "")
	if c.NetNS != broker.NetNSHolder || c.HolderName != broker.HolderName(spec.Name) || c.HolderID == "" {
		t.Errorf("container %+v: want mode %s with holder %s", c, broker.NetNSHolder, broker.HolderName(spec.Name))
	}
	if c.Bind != "127.0.0.1" || c.Port != spec.Port || c.StartReturned.IsZero() {
		t.Errorf("container %+v: want 127.0.0.1:%d, read from the holder", c, spec.Port)
	}
	found, err := eng.Find(ctx, spec.Name)
	if err != nil || found.ID != c.ID || found.HolderID != c.HolderID || found.Addr() != c.Addr() {
		t.Errorf("Find = %+v, %v; want %+v", found, err, c)
	}

	left, err := eng.Leftovers(ctx, "org.mttrlab.test")
	if err != nil {
		t.Fatal(err)
	}
	var roles []string
	for _, l := range left {
		if l.Label == t.Name() {
			roles = append(roles, l.Name+"="+l.Role)
		}
	}
	want := spec.Name + "=" + broker.RoleBroker + " " + c.HolderName + "=" + broker.RoleNetNS
	if strings.Join(roles, " ") != want {
		t.Errorf("leftovers %v, want %s (brokers first)", roles, want)
	}

	if err := eng.Remove(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{c.ID, c.HolderID} {
		if dockertest.Exists(t, id) {
			t.Errorf("container %s still there after Remove", id)
		}
	}
	if err := eng.Remove(ctx, spec.Name); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("second Remove = %v, want ErrNotFound", err)
	}
}

func TestDockerRunReplacesAndRefuses(t *testing.T) {
	eng, img, tlsConf := image(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel) // after the parallel subtests, unlike defer

	t.Run("replace", func(t *testing.T) {
		t.Parallel()
		spec, first := run(t, ctx, eng, img, tlsConf, broker.NetNSHolder)
		second, err := eng.Run(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if dockertest.Exists(t, first.ID) || dockertest.Exists(t, first.HolderID) {
			t.Error("the earlier broker or its holder survived Run")
		}
		if _, err := eng.WaitReady(ctx, second, "", tlsConf, mqttprobe.ProbeInterval); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("plain-replaces-holder", func(t *testing.T) {
		t.Parallel()
		spec, first := run(t, ctx, eng, img, tlsConf, broker.NetNSHolder)
		spec.NetNS = broker.NetNSPlain
		c, err := eng.Run(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if dockertest.Exists(t, first.HolderID) || c.NetNS != broker.NetNSPlain || c.HolderID != "" || c.Port != spec.Port {
			t.Errorf("plain run after a holder run: %+v, old holder left: %v", c, dockertest.Exists(t, first.HolderID))
		}
		if _, err := eng.WaitReady(ctx, c, "", tlsConf, mqttprobe.ProbeInterval); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("foreign-holder", func(t *testing.T) {
		t.Parallel()
		name := dockertest.Name("expecto-patronum")
		// Not from img: containers inherit its labels, ours among them.
		id := dockertest.CreateForeign(t, broker.HolderName(name), dockertest.NodeImage("node:24-slim"))
		spec := broker.RunSpec{Name: name, Image: img, Bind: "127.0.0.1", Port: dockertest.FreePort(t)}
		t.Cleanup(func() { _ = eng.Remove(context.Background(), name) })
		if _, err := eng.Run(ctx, spec); !errors.Is(err, broker.ErrNotOurs) {
			t.Errorf("Run beside a foreign %s = %v, want ErrNotOurs", broker.HolderName(name), err)
		}
		if err := eng.Remove(ctx, name); !errors.Is(err, broker.ErrNotOurs) {
			t.Errorf("Remove beside a foreign holder = %v, want ErrNotOurs", err)
		}
		if !dockertest.Exists(t, id) {
			t.Error("the foreign container was removed")
		}
	})
	for _, mode := range broker.NetNSModes {
		t.Run("busy-port-"+mode, func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			label := dockertest.Name("busy")
			spec := broker.RunSpec{
				Name: dockertest.Name("expecto-patronum"), Image: img, NetNS: mode,
				Bind: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port,
				Labels: map[string]string{"org.mttrlab.test": label},
			}
			t.Cleanup(func() { _ = eng.Remove(context.Background(), spec.Name) })
			if _, err := eng.Run(ctx, spec); err == nil || !strings.Contains(err.Error(), "is busy") {
				t.Errorf("Run on a busy port = %v, want it to say the port is busy", err)
			}
			left, err := eng.Leftovers(ctx, "org.mttrlab.test="+label)
			if err != nil || len(left) != 0 {
				t.Errorf("Run that failed left %v (%v)", left, err)
			}
		})
	}
	t.Run("unknown-mode", func(t *testing.T) {
		spec := broker.RunSpec{Name: dockertest.Name("expecto-patronum"), Image: img, Bind: "127.0.0.1", NetNS: "host"}
		if _, err := eng.Run(ctx, spec); err == nil || !strings.Contains(err.Error(), `"host"`) {
			t.Errorf("Run with NetNS host = %v, want an error naming it", err)
		}
	})
}

// TestDockerFaults injects and heals every fault in both network namespace
// modes and checks that the broker answers again afterwards, and what a
// client meets while it is away.
func TestDockerFaults(t *testing.T) {
	eng, img, tlsConf := image(t)
	faults := []string{broker.FaultStop, broker.FaultKill, broker.FaultRestart, broker.FaultRecreate, broker.FaultPause, broker.FaultDisconnect}
	for _, mode := range broker.NetNSModes {
		for _, fault := range faults {
			t.Run(mode+"/"+fault, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				spec, c := run(t, ctx, eng, img, tlsConf, mode)
				o, err := eng.NewOutage(ctx, fault, c, spec, c.Addr(), tlsConf)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(o.Close)

				at, err := o.Inject(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if at.IsZero() {
					t.Error("Inject returned no time")
				}
				if !o.Instant() {
					seen := knock(ctx, c.Addr(), 2*time.Second)
					t.Logf("a client during the outage: %s", seen)
					if mode == broker.NetNSHolder && (fault == broker.FaultStop || fault == broker.FaultKill || fault == broker.FaultRecreate) && seen != seenClosed {
						t.Errorf("a client during the outage: %s, want %s (the holder keeps the port)", seen, seenClosed)
					}
				}

				healed, err := o.Heal(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if healed.Before(at) {
					t.Errorf("fault at %v, healed %v: out of order", at, healed)
				}
				after := o.Container()
				if after.Addr() != c.Addr() || after.NetNS != c.NetNS || after.HolderID != c.HolderID {
					t.Errorf("after heal %+v, before %+v: address, mode or holder changed", after, c)
				}
				if (fault == broker.FaultRecreate) == (after.ID == c.ID) {
					t.Errorf("after %s the broker is %s, before %s", fault, after.ID, c.ID)
				}
				ready, err := o.Ready(ctx)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("ready %v after heal returned", ready.Sub(healed).Round(time.Millisecond))
			})
		}
	}
}

// What a client meets when it connects to a broker that is away.
const (
	seenRefused  = "refused"              // nothing listens on the host port
	seenClosed   = "accepted-then-closed" // the port proxy accepts, then closes
	seenSilent   = "accepted-silent"      // accepted, no answer within the wait
	seenAnswered = "answered"             // the TLS handshake completed
)

// knock connects to addr once, starts a TLS handshake (any certificate
// will do) and says what it met.
func knock(ctx context.Context, addr string, wait time.Duration) string {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return seenRefused
	} else if err != nil {
		return "dial: " + err.Error()
	}
	defer conn.Close()
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
	err = tc.HandshakeContext(ctx)
	switch {
	case err == nil:
		return seenAnswered
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return seenClosed
	case ctx.Err() != nil:
		return seenSilent
	}
	return "handshake: " + err.Error()
}
