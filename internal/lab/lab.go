// Package lab holds the commands behind the mage targets. Each one wires the
// other packages together for one task, from a resolved config.Config, and
// reports to an io.Writer; magefile.go only loads the configuration and calls
// them. What a command prints is for people; what it returns is the error.
package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/certs"
	"github.com/mttrlab/mttr/internal/config"
	"github.com/mttrlab/mttr/internal/interrupt"
	"github.com/mttrlab/mttr/internal/mqttprobe"
)

// Lab runs commands with one configuration.
type Lab struct {
	Config   config.Config
	Out      io.Writer // progress and results
	Err      io.Writer // side notes that must not mix with machine-readable output; Out when nil
	BuildDir string    // broker image build context; "aedes" by default

	// path is a networked run's path to the broker, on the run's own copy.
	path *netPath
	// study places the run in a study, on the copy that runs it.
	study *studyRef
}

// FromEnv returns a Lab configured from MTTR_* variables, writing to stdout.
func FromEnv() (*Lab, error) {
	cfg, err := config.FromEnv()
	if err != nil {
		return nil, err
	}
	return &Lab{Config: cfg, Out: os.Stdout, Err: os.Stderr, BuildDir: "aedes"}, nil
}

// Do runs fn with a Lab configured from the environment, under a context
// that every stop request cancels: SIGINT, SIGTERM, SIGHUP, the exit of the
// process that started this one, or its output closing (package
// interrupt). A bad MTTR_* value is returned before fn starts.
func Do(ctx context.Context, fn func(context.Context, *Lab) error) error {
	ctx, cancel, stop := interrupt.Context(ctx)
	defer stop()
	l, err := FromEnv()
	if err != nil {
		return err
	}
	out, errOut := interrupt.Output(os.Stdout, cancel), interrupt.Output(os.Stderr, cancel)
	defer out.Close()
	defer errOut.Close()
	l.Out, l.Err = out, errOut
	return fn(ctx, l)
}

func (l *Lab) printf(format string, args ...any) { fmt.Fprintf(l.Out, format, args...) }

// withSyncedOutput returns a copy of l whose Out takes one write at a time,
// for commands that print from several goroutines.
func (l *Lab) withSyncedOutput() *Lab {
	c := *l
	c.Out = &syncWriter{w: l.Out}
	return &c
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// Certs writes a new self-signed certificate and key for host.
func (l *Lab) Certs(ctx context.Context, host string) error {
	if err := certs.ValidateHost(host); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	pair := certs.For(l.Config.CertDir, host)
	unlock, err := pair.Lock(ctx)
	if err != nil {
		return fmt.Errorf("certs %s: %w", host, err)
	}
	defer unlock()
	return l.makeCert(pair)
}

// makeCert writes a new pair; the caller holds the pair's lock.
func (l *Lab) makeCert(pair certs.Pair) error {
	fp, err := certs.Generate(pair, l.Config.CertDays)
	if err != nil {
		return fmt.Errorf("certs %s: %w", pair.Host, err)
	}
	l.printf("certificate %s\nkey         %s\nvalid for   %d days\nsha256      %s\n", pair.CertPath, pair.KeyPath, l.Config.CertDays, fp)
	return nil
}

// hostCert is MTTR_HOST's certificate as read from MTTR_CERT_DIR.
type hostCert struct {
	pair certs.Pair
	cert *x509.Certificate
	fp   string // SHA-256 fingerprint
}

// trust returns a TLS configuration that trusts only this certificate and
// verifies host.
func (h hostCert) trust(host string) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(h.cert)
	return &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
}

// cert reads the certificate for MTTR_HOST; with create set, it generates
// the pair first when it is missing or expired, holding the pair's lock
// so that runs starting at once make one pair and all trust it.
func (l *Lab) cert(ctx context.Context, create bool) (hostCert, error) {
	pair := certs.For(l.Config.CertDir, l.Config.Host)
	if create {
		unlock, err := pair.Lock(ctx)
		if err != nil {
			return hostCert{}, fmt.Errorf("certificate for MTTR_HOST=%s: %w", l.Config.Host, err)
		}
		defer unlock()
	}
	c, fp, err := certs.Load(pair.CertPath)
	switch {
	case err == nil && time.Now().Before(c.NotAfter):
		return hostCert{pair, c, fp}, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return hostCert{}, err
	case !create && err != nil:
		return hostCert{}, fmt.Errorf("no certificate for MTTR_HOST=%s at %s: run `mage certs %s` and `mage image`", l.Config.Host, pair.CertPath, l.Config.Host)
	case !create:
		return hostCert{}, fmt.Errorf("certificate %s expired on %s: run `mage certs %s` and `mage image`", pair.CertPath, c.NotAfter.Format(time.DateOnly), l.Config.Host)
	}
	l.printf("making a certificate for %s\n", l.Config.Host)
	if err := l.makeCert(pair); err != nil {
		return hostCert{}, err
	}
	c, fp, err = certs.Load(pair.CertPath)
	return hostCert{pair, c, fp}, err
}

// tlsConfig trusts only the certificate for MTTR_HOST and verifies that name.
func (l *Lab) tlsConfig() (*tls.Config, error) {
	hc, err := l.cert(context.Background(), false)
	if err != nil {
		return nil, err
	}
	return hc.trust(l.Config.Host), nil
}

// imageCurrent reports whether img carries the certificate fp for host and
// was built from the sources with digest source.
func imageCurrent(img broker.Image, host, fp, source string) (certOK, sourceOK bool) {
	return img.Host == host && img.Fingerprint == fp, img.Source == source
}

// engine connects to the Docker engine, each of its calls bounded by
// MTTR_ENGINE_TIMEOUT.
func (l *Lab) engine(ctx context.Context) (*broker.Engine, error) {
	return broker.ConnectWithin(ctx, l.Config.EngineTimeout)
}

// Image builds the broker image, making the certificate first if needed.
func (l *Lab) Image(ctx context.Context) error {
	hc, err := l.cert(ctx, true)
	if err != nil {
		return err
	}
	eng, err := l.engine(ctx)
	if err != nil {
		return err
	}
	defer eng.Close()
	source, err := broker.SourceDigest(l.BuildDir)
	if err != nil {
		return err
	}
	l.printf("building %s from %s/ on %s, base %s\n", l.Config.Image, l.BuildDir, eng.Host(), l.Config.NodeImage)
	id, err := eng.Build(ctx, broker.BuildSpec{
		Dir:         l.BuildDir,
		Tag:         l.Config.Image,
		NodeImage:   l.Config.NodeImage,
		Cert:        hc.pair,
		Fingerprint: hc.fp,
		Source:      source,
	}, l.Out)
	if err != nil {
		return err
	}
	l.printf("built %s (%s) for host %s, certificate sha256 %s\n", l.Config.Image, id, l.Config.Host, hc.fp)
	return nil
}

// RemoveImage removes the broker image.
func (l *Lab) RemoveImage(ctx context.Context) error {
	return l.removal(ctx, "image "+l.Config.Image, "is not present", func(eng *broker.Engine) error {
		return eng.RemoveImage(ctx, l.Config.Image)
	})
}

// removal runs remove against the engine and reports what happened to
// what; a thing that is not there is said so, not an error.
func (l *Lab) removal(ctx context.Context, what, absent string, remove func(*broker.Engine) error) error {
	eng, err := l.engine(ctx)
	if err != nil {
		return err
	}
	defer eng.Close()
	err = remove(eng)
	if errors.Is(err, broker.ErrNotFound) {
		l.printf("%s %s; nothing to remove\n", what, absent)
		return nil
	}
	if err != nil {
		return err
	}
	l.printf("removed %s\n", what)
	return nil
}

// Up runs the broker container and returns once it answers MQTT over
// verified TLS. The image must carry the certificate the device trusts.
func (l *Lab) Up(ctx context.Context) error {
	_, err := l.up(ctx)
	return err
}

func (l *Lab) up(ctx context.Context) (*broker.Container, error) {
	hc, err := l.cert(ctx, false)
	if err != nil {
		return nil, err
	}
	tlsConf := hc.trust(l.Config.Host)
	eng, err := l.engine(ctx)
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	img, err := eng.InspectImage(ctx, l.Config.Image)
	if errors.Is(err, broker.ErrNotFound) {
		return nil, fmt.Errorf("image %s not found: build it with `mage image`", l.Config.Image)
	} else if err != nil {
		return nil, err
	}
	source, err := broker.SourceDigest(l.BuildDir)
	if err != nil {
		return nil, err
	}
	certOK, sourceOK := imageCurrent(img, l.Config.Host, hc.fp, source)
	if !certOK {
		return nil, fmt.Errorf("image %s carries the certificate for %q (sha256 %s), not the current one for MTTR_HOST=%s: rebuild it with `mage image`", l.Config.Image, img.Host, img.Fingerprint, l.Config.Host)
	}
	if !sourceOK {
		l.printf("note: image %s was built from other %s/ sources than these; `mage image` rebuilds it\n", l.Config.Image, l.BuildDir)
	}
	if err := l.refuseLive(ctx, eng, l.Config.Container); err != nil {
		return nil, err
	}
	c, err := eng.Run(ctx, broker.RunSpec{Name: l.Config.Container, Image: l.Config.Image, Bind: l.Config.Bind, Port: l.Config.Port, NetNS: l.Config.NetNS})
	if err != nil {
		return nil, err
	}
	addr := l.Config.BrokerAddr
	if addr == "" {
		addr = c.Addr()
	}
	wctx, cancel := context.WithTimeout(ctx, l.Config.ReadyTimeout)
	defer cancel()
	ready, err := eng.WaitReady(wctx, c, addr, tlsConf, mqttprobe.ProbeInterval)
	if err != nil {
		_ = eng.Remove(context.WithoutCancel(ctx), c.Name)
		return nil, fmt.Errorf("broker %s not ready within %s (MTTR_READY_TIMEOUT): %w", c.Name, l.Config.ReadyTimeout, err)
	}
	l.printf("broker %s ready at %s (TLS name %s), %s after start\n", c.Name, addr, l.Config.Host, ready.Sub(c.StartedAt).Round(time.Millisecond))
	return c, nil
}

// Down stops and removes the broker container.
func (l *Lab) Down(ctx context.Context) error {
	return l.removal(ctx, "container "+l.Config.Container, "is not there", func(eng *broker.Engine) error {
		if err := l.refuseLive(ctx, eng, l.Config.Container); err != nil {
			return err
		}
		if err := eng.Stop(ctx, l.Config.Container, 10*time.Second); err != nil {
			return err
		}
		return eng.Remove(ctx, l.Config.Container)
	})
}
