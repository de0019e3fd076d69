// Package localbroker runs the aedes broker (aedes/server.js) as a local
// Node.js process instead of a Docker container: a test bed with no Docker
// path at all. It believes a process it starts is its own to end and
// nobody else's. The broker runs in a process group of its own that dies
// with us, even on SIGKILL (the parent-death signal); signals go to that
// group only while its leader has not been reaped, so a recycled process
// id is never hit; Close leaves no process behind. Faults are signals to
// the group: SIGTERM (stop), SIGKILL (kill), SIGSTOP and SIGCONT (pause).
// What needs a container or a network (restart, recreate, disconnect) is
// refused, not imitated.
package localbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/host"
	"github.com/mttrlab/mttr/internal/mqttprobe"
)

const (
	// closeGrace is how long Close waits after SIGTERM before SIGKILL.
	closeGrace = 2 * time.Second
	// stopGrace is how long a stop fault waits after SIGTERM before
	// SIGKILL, as docker stop does in the container mode.
	stopGrace = 10 * time.Second
	// drainWait bounds the wait for the rest of an exited broker's output.
	drainWait = 2 * time.Second
	// maxLine is the longest broker output line kept; longer ones are
	// dropped.
	maxLine = 64 << 10
)

// Spec is one broker: where it runs from, where it listens, what it
// serves, and where its output goes.
type Spec struct {
	AppDir            string   // from Prepare: server.js with its node_modules
	Addr              string   // host:port to listen on; the host is an IP address, a loopback one unless AllowNonLoopback
	AllowNonLoopback  bool     // let Addr be reachable from other machines
	CertFile, KeyFile string   // the TLS certificate and key the broker serves
	Env               []string // extra environment, e.g. MQTT_VERIFIER_ID=...; cannot override MQTT_HOST, MQTT_PORT, MQTT_CERT, MQTT_KEY

	// Events receives every broker event line, of every broker process in
	// turn (never two at once), stamped when our process read it. It must
	// not block. May be nil.
	Events func(brokerlog.Event)
	// Stderr receives the broker's stderr. May be nil; its last lines go
	// into errors either way.
	Stderr io.Writer
}

// Broker is the broker as a local Node.js process. After a stop or kill
// fault it is the process that Heal started in its place.
type Broker struct {
	spec       Spec
	host, port string

	mu     sync.Mutex
	cur    *process // nil while a fault has stopped it, and after Close
	closed bool

	closeOnce sync.Once
	closeErr  error
}

// Start runs `node server.js` in spec.AppDir, listening on spec.Addr, in a
// process group of its own that is killed when our process ends. It does
// not wait for the broker to answer: see WaitReady.
func Start(ctx context.Context, spec Spec) (*Broker, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start broker: %w", err)
	}
	b, err := newBroker(spec)
	if err != nil {
		return nil, fmt.Errorf("start broker: %w", err)
	}
	p, err := b.start()
	if err != nil {
		return nil, fmt.Errorf("start broker: %w", err)
	}
	b.cur = p
	return b, nil
}

func newBroker(spec Spec) (*Broker, error) {
	host, port, err := net.SplitHostPort(spec.Addr)
	if err != nil {
		return nil, fmt.Errorf("addr %q: %w", spec.Addr, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil, fmt.Errorf("addr %q: the host must be an IP address", spec.Addr)
	}
	if !ip.IsLoopback() && !spec.AllowNonLoopback {
		return nil, fmt.Errorf("addr %q: %s is not a loopback address", spec.Addr, host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("addr %q: the port must be a number from 1 to 65535", spec.Addr)
	}
	if _, err := os.Stat(filepath.Join(spec.AppDir, "server.js")); err != nil {
		return nil, fmt.Errorf("app dir %q: %w (run Prepare first)", spec.AppDir, err)
	}
	for _, f := range []struct {
		name string
		path *string
	}{{"certificate", &spec.CertFile}, {"key", &spec.KeyFile}} {
		if *f.path == "" {
			return nil, fmt.Errorf("%s file: none given", f.name)
		}
		abs, err := filepath.Abs(*f.path) // the broker runs in AppDir
		if err != nil {
			return nil, fmt.Errorf("%s file %q: %w", f.name, *f.path, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("%s file: %w", f.name, err)
		}
		*f.path = abs
	}
	return &Broker{spec: spec, host: host, port: port}, nil
}

// Addr returns the address the broker listens on.
func (b *Broker) Addr() string { return b.spec.Addr }

// StartedAt returns when the current broker process was started (by Start,
// or by the Heal of a stop or kill fault); zero while none runs.
func (b *Broker) StartedAt() time.Time {
	if p := b.current(); p != nil {
		return p.started
	}
	return time.Time{}
}

// Group returns the current broker process's process group (it leads
// one of its own) and when it started; zero while none runs.
func (b *Broker) Group() (int, time.Time) {
	if p := b.current(); p != nil {
		return p.pid, p.started
	}
	return 0, time.Time{}
}

// WaitReady probes the broker every interval until it answers an MQTT
// CONNECT over TLS verified by tlsConf, and returns when the accepting
// CONNACK arrived. It fails at once, with the process's last output, when
// the process exited.
func (b *Broker) WaitReady(ctx context.Context, tlsConf *tls.Config, interval time.Duration) (time.Time, error) {
	p := b.current()
	if p == nil {
		return time.Time{}, errors.New("wait ready: no broker process is running")
	}
	if err := p.alive(); err != nil {
		return time.Time{}, fmt.Errorf("wait ready: %w", err)
	}
	return mqttprobe.Wait(ctx, b.spec.Addr, tlsConf, interval, p.alive)
}

// Close stops the broker: SIGTERM (and SIGCONT, should it be paused) to
// its process group, SIGKILL after two seconds, and returns once the
// process has exited and Events has had its last line. Later calls return
// the first call's result; a Heal after Close fails.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		p := b.cur
		b.cur = nil
		b.mu.Unlock()
		if p != nil {
			if err := p.terminate(closeGrace); err != nil {
				b.closeErr = fmt.Errorf("close broker: %w", err)
			}
		}
	})
	return b.closeErr
}

func (b *Broker) current() *process {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cur
}

// forget drops p as the current process once it has exited.
func (b *Broker) forget(p *process) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == p {
		b.cur = nil
	}
}

// restart starts a new process unless one is running, and returns the
// running one.
func (b *Broker) restart() (*process, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errors.New("broker is closed")
	}
	if b.cur != nil && b.cur.alive() == nil {
		return b.cur, nil
	}
	p, err := b.start()
	if err != nil {
		return nil, err
	}
	b.cur = p
	return p, nil
}

// errExited is what signalling a reaped process returns.
var errExited = errors.New("broker process has exited")

// process is one run of node server.js; its pid is also its process
// group id.
type process struct {
	pid     int
	started time.Time
	done    chan struct{} // closed once it exited and its output was read
	exited  time.Time     // set before done is closed
	exitErr error         // cmd.Wait's result, set before done is closed
	stdout  *lastLines
	stderr  *lastLines

	sigMu  sync.Mutex
	reaped bool // its id may belong to someone else now
}

func (b *Broker) start() (*process, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("node not found on PATH: install Node.js %d or newer: %w", MinNodeMajor, err)
	}
	cmd := exec.Command(node, "server.js")
	cmd.Dir = b.spec.AppDir
	cmd.Env = append(os.Environ(), "NODE_ENV=production")
	cmd.Env = append(cmd.Env, b.spec.Env...)
	cmd.Env = append(cmd.Env,
		"MQTT_HOST="+b.host,
		"MQTT_PORT="+b.port,
		"MQTT_CERT="+b.spec.CertFile,
		"MQTT_KEY="+b.spec.KeyFile)
	cmd.SysProcAttr = sysProcAttr()

	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = startLocked(cmd)
	started := time.Now()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("node server.js: %w", err)
	}

	p := &process{
		pid:     cmd.Process.Pid,
		started: started,
		done:    make(chan struct{}),
		stdout:  &lastLines{n: 5},
		stderr:  &lastLines{n: 10},
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); b.readEvents(outR, p) }()
	go func() { defer readers.Done(); b.readStderr(errR, p) }()
	go func() {
		exited, err := host.Reap(cmd, func() {
			p.sigMu.Lock()
			p.reaped = true
			p.sigMu.Unlock()
		})
		// Only the broker's own process group holds the pipes' write ends,
		// so they close as it exits; bound the wait all the same.
		drained := make(chan struct{})
		go func() { readers.Wait(); close(drained) }()
		t := time.NewTimer(drainWait)
		select {
		case <-drained:
		case <-t.C:
			outR.Close()
			errR.Close()
			<-drained
		}
		t.Stop()
		p.exited, p.exitErr = exited, err
		close(p.done)
	}()
	return p, nil
}

// readEvents hands every broker event line on r to the spec's Events,
// stamped when it was read.
func (b *Broker) readEvents(r *os.File, p *process) {
	defer r.Close()
	var readAt time.Time
	lines := brokerlog.NewLines(maxLine, func(line []byte) {
		p.stdout.line(line)
		e, ok := brokerlog.Parse(line)
		if !ok || b.spec.Events == nil {
			return
		}
		e.At = brokerlog.Stamp(readAt, e.At) // Parse gave the line's own ts
		b.spec.Events(e)
	})
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		readAt = time.Now()
		_, _ = lines.Write(buf[:n])
		if err != nil {
			return
		}
	}
}

func (b *Broker) readStderr(r *os.File, p *process) {
	defer r.Close()
	var w io.Writer = p.stderr
	if b.spec.Stderr != nil {
		w = io.MultiWriter(p.stderr, b.spec.Stderr)
	}
	_, _ = io.Copy(w, r)
}

// signal sends sig to the process group, unless its leader was reaped.
func (p *process) signal(sig syscall.Signal) error {
	p.sigMu.Lock()
	defer p.sigMu.Unlock()
	if p.reaped {
		return errExited
	}
	if err := syscall.Kill(-p.pid, sig); err != nil {
		return fmt.Errorf("signal %v to process group %d: %w", sig, p.pid, err)
	}
	return nil
}

// alive returns nil while the process runs, and what it left behind once
// it exited.
func (p *process) alive() error {
	select {
	case <-p.done:
		status := "exit status 0"
		if p.exitErr != nil {
			status = p.exitErr.Error()
		}
		return fmt.Errorf("broker process %d exited (%s); stderr: %s; stdout: %s", p.pid, status, p.stderr, p.stdout)
	default:
		return nil
	}
}

// terminate sends SIGTERM (and SIGCONT, in case it is paused), then
// SIGKILL after grace, and returns once the process has exited.
func (p *process) terminate(grace time.Duration) error {
	err := p.signal(syscall.SIGTERM)
	if errors.Is(err, errExited) {
		<-p.done
		return nil
	}
	_ = p.signal(syscall.SIGCONT)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	if err := p.signal(syscall.SIGKILL); err != nil && !errors.Is(err, errExited) {
		return err
	}
	<-p.done
	return nil
}
