package localbroker

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/certs"
	"github.com/mttrlab/mttr/internal/mqttprobe"
)

// TestBrokerDiesWithItsParent SIGKILLs a parent process (this test binary,
// run again) that started a broker, and expects the broker to die with it.
func TestBrokerDiesWithItsParent(t *testing.T) {
	f := newFixture(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join([]string{f.dir, f.addr, f.cert, f.key}, " "))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if strings.HasPrefix(s.Text(), "ready ") {
				ready <- s.Text()
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	var pid int
	select {
	case l := <-ready:
		if pid, err = strconv.Atoi(strings.TrimPrefix(l, "ready ")); err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the parent process never reported a listening broker")
	}
	exited, err := exitOf(pid)
	if err != nil {
		t.Fatalf("broker process %d: %v", pid, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if err := exited(5 * time.Second); err != nil {
		t.Fatalf("broker process %d after its parent was killed: %v", pid, err)
	}
}

// exitOf opens a pidfd for process pid, which need not be our child, and
// returns a function that waits at most timeout for the process to exit.
func exitOf(pid int) (func(timeout time.Duration) error, error) {
	const sysPidfdOpen = 434 // the same on every Linux architecture
	fd, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if errno != 0 {
		return nil, fmt.Errorf("pidfd_open: %w", errno)
	}
	return func(timeout time.Duration) error {
		defer syscall.Close(int(fd))
		deadline := time.Now().Add(timeout)
		for {
			var set syscall.FdSet
			set.Bits[fd/64] |= 1 << (fd % 64)
			left := time.Until(deadline)
			if left < 0 {
				left = 0
			}
			tv := syscall.NsecToTimeval(left.Nanoseconds())
			n, err := syscall.Select(int(fd)+1, &set, nil, nil, &tv)
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case err != nil:
				return fmt.Errorf("select on pidfd: %w", err)
			case n == 0:
				return fmt.Errorf("still running %s later", timeout)
			default:
				return nil // readable: the process exited
			}
		}
	}, nil
}

// TestWarmUpNotOnTheBrokersPort: the broker warms up before it listens.
// When it did so on a loopback port of its own, that port could be the one
// it was about to listen on: an MQTT client was then answered by the
// warm-up, refused while it closed, then answered by the broker (CI once
// failed so: "connection refused" right after a session through the same
// broker); and a warm-up connection's local port could be it too, and the
// broker could not listen (EADDRINUSE). In a network namespace whose
// ephemeral range is ten ports both happen within a few starts (the
// warm-up port was the broker's in 11 of 20 starts), so twelve starts
// there, each probed until it listens, must answer only once it listens.
func TestWarmUpNotOnTheBrokersPort(t *testing.T) {
	args := []string{"--net"}
	if os.Geteuid() != 0 {
		args = append(args, "--map-root-user")
	}
	setup := `ip link set lo up && echo "40000 40009" > /proc/sys/net/ipv4/ip_local_port_range`
	if out, err := exec.Command("unshare", append(args, "sh", "-c", setup)...).CombinedOutput(); err != nil {
		t.Skipf("this machine cannot make a network namespace with a port range of its own: unshare %s: %v: %s", strings.Join(args, " "), err, out)
	}
	f := newFixture(t)
	cmd := exec.CommandContext(t.Context(), "unshare", append(args, "sh", "-c", setup+` && exec "$0" -test.run='^$'`, os.Args[0])...)
	cmd.Env = append(os.Environ(), warmUpEnv+"="+strings.Join([]string{f.dir, f.cert, f.key}, " "))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// checkWarmUp starts a broker twelve times on a port the kernel has just
// handed out, and probes it with MQTT (mqttprobe, from 127.0.0.2, so that
// no connection of the broker's own can meet a probe) from before the
// start until the broker says it listens. It returns 1 if the port ever
// refused a connection after it had answered one with a CONNACK.
func checkWarmUp(spec string) int {
	var dir, cert, key string
	if _, err := fmt.Sscan(spec, &dir, &cert, &key); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pool, err := certs.Pool(cert)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	tlsConf := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	for i := range 12 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		addr := l.Addr().String()
		l.Close()
		listening := make(chan struct{})
		var once sync.Once
		events := func(e brokerlog.Event) {
			if e.Kind == brokerlog.Listening {
				once.Do(func() { close(listening) })
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		probed := make(chan []string, 1)
		go func() { probed <- probeUntil(ctx, addr, tlsConf, listening) }()
		b, err := Start(ctx, Spec{AppDir: dir, Addr: addr, CertFile: cert, KeyFile: key, Events: events, Stderr: os.Stderr})
		if err != nil {
			cancel()
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		seq := <-probed
		cancel()
		state := processState(b)
		if err := b.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		answered := false
		for _, r := range seq {
			if r == "refused" && answered {
				fmt.Fprintf(os.Stderr, "start %d on %s: the port answered, then refused, before the broker listened: %s\n", i+1, addr, strings.Join(seq, " -> "))
				return 1
			}
			answered = answered || r == "answered"
		}
		if len(seq) == 0 || seq[len(seq)-1] != "answered" {
			fmt.Fprintf(os.Stderr, "start %d on %s: never answered (%s): %s\n", i+1, addr, state, strings.Join(seq, " -> "))
			return 1
		}
	}
	return 0
}

// probeUntil probes addr with MQTT again and again until listening is
// closed and one more probe was answered, or ctx ends, and returns each
// change of outcome: "answered", "refused", or "failed: " and any other
// error.
func probeUntil(ctx context.Context, addr string, tlsConf *tls.Config, listening <-chan struct{}) []string {
	// From 127.0.0.2, so that no probe's 4-tuple can be one of the
	// broker's own connections, and from ports of our choosing: the
	// namespace's ten ephemeral ports are for the broker.
	port := 50000
	dial := func(ctx context.Context, d net.Dialer, network, addr string) (net.Conn, error) {
		port = 50000 + (port+1)%1000
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: port}
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetLinger(0) // no TIME_WAIT: the ports come round again
		}
		return c, err
	}
	var seq []string
	tick := time.NewTicker(500 * time.Microsecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		err := mqttprobe.ProbeVia(attempt, dial, addr, tlsConf)
		cancel()
		r := "answered"
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			r = "refused"
		case err != nil:
			r = "failed: " + err.Error()
		}
		if len(seq) == 0 || seq[len(seq)-1] != r {
			seq = append(seq, r)
		}
		select {
		case <-listening:
			if r == "answered" {
				return seq
			}
		default:
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	return seq
}
