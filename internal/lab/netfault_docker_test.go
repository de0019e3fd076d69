package lab

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/device"
	"github.com/mttrlab/mttr/internal/dockertest"
	"github.com/mttrlab/mttr/internal/mttr"
	"github.com/mttrlab/mttr/internal/needs"
	"github.com/mttrlab/mttr/internal/netfault"
	"github.com/mttrlab/mttr/internal/store"
)

// netLab is a broker lab for network faults, on the shared broker and
// netfilter helper images (the helper is made by the first run that needs
// it).
func netLab(t *testing.T) *Lab {
	t.Helper()
	base, _ := sharedLab(t)
	return base
}

// at is a cycle's moment, stored in Unix nanoseconds, as a time.
func at(ns int64) time.Time { return time.Unix(0, ns) }

// synAfter is when a connection attempt begun at begin sends its first SYN
// at or after t, if its SYNs were dropped until then. Linux retransmits an
// unanswered SYN after 1 s, keeps that interval for the first
// net.ipv4.tcp_syn_linear_timeouts retransmissions (4 since Linux 6.5; the
// setting is absent before), then doubles it.
func synAfter(t *testing.T, begin, after time.Time) time.Time {
	t.Helper()
	linear := 0
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_syn_linear_timeouts"); err == nil {
		if linear, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			t.Fatalf("tcp_syn_linear_timeouts: %v", err)
		}
	}
	rto := time.Second
	for k := 1; ; k++ {
		begin = begin.Add(rto)
		if !begin.Before(after) {
			return begin
		}
		if k > linear {
			rto *= 2
		}
	}
}

// healSlack is how long before healed_at the rules may already have been
// gone: the heal's exec in the helper returns after nft applied them.
const healSlack = 200 * time.Millisecond

// checkBlackholeCycle checks a cycle of a blackhole that outlasted
// detection, for a device with keep-alive ka, ping timeout pt and connect
// timeout ct:
//   - detection in [ka, 1.5 ka + pt] (paho checks its keep-alive every
//     ka/4 and, a ping sent, times it out at such a check), with a margin of
//     250 ms for the scheduling of a loaded machine;
//   - an attempt begun during the blackhole and still open at the heal
//     keeps the device waiting until its next SYN or its connect timeout,
//     whichever comes first: it cannot reconnect sooner;
//   - an attempt begun after the heal reconnects at once (within 1 s: TCP,
//     TLS and CONNECT on this machine).
//
// It returns whether the attempt was open at the heal.
func checkBlackholeCycle(t *testing.T, c mttr.Cycle, ka, pt, ct time.Duration) bool {
	t.Helper()
	const margin = 250 * time.Millisecond
	det, ok := c.Detection()
	if !ok || det < ka || det > ka*3/2+pt+margin {
		t.Errorf("cycle %d: detection %v (found %v), want in [%v, %v] (keep-alive %v, ping timeout %v, margin %v)",
			c.Cycle, det, ok, ka, ka*3/2+pt+margin, ka, pt, margin)
	}
	if c.ReconnectedAt == 0 || c.AttemptAt == 0 {
		t.Errorf("cycle %d: reconnected_at %d attempt_at %d: the device did not come back", c.Cycle, c.ReconnectedAt, c.AttemptAt)
		return false
	}
	attempt, healed, back := at(c.AttemptAt), at(c.HealedAt), at(c.ReconnectedAt)
	if attempt.Before(healed) {
		wait := synAfter(t, attempt, healed.Add(-healSlack))
		if end := attempt.Add(ct); end.Before(wait) {
			wait = end
		}
		if back.Before(wait) {
			t.Errorf("cycle %d: attempt begun %v before the heal reconnected %v after it, before its next SYN or connect timeout (%v after the heal)",
				c.Cycle, healed.Sub(attempt), back.Sub(healed), wait.Sub(healed))
		}
		if rec, ok := c.Recovery(); !ok || rec < wait.Sub(at(c.ReadyAt)) {
			t.Errorf("cycle %d: recovery %v, want ≥ %v: the wait on the open attempt", c.Cycle, rec, wait.Sub(at(c.ReadyAt)))
		}
		t.Logf("cycle %d: detection %v; attempt open at the heal (begun %v before), reconnected %v after the heal, recovery %v",
			c.Cycle, det, healed.Sub(attempt), back.Sub(healed), dur(c.Recovery()))
		return true
	}
	if took := back.Sub(attempt); took > time.Second {
		t.Errorf("cycle %d: an attempt begun after the heal took %v to reconnect", c.Cycle, took)
	}
	t.Logf("cycle %d: detection %v; attempt begun %v after the heal, reconnected %v after it, recovery %v",
		c.Cycle, det, attempt.Sub(healed), back.Sub(attempt), dur(c.Recovery()))
	return false
}

func dur(d time.Duration, _ bool) time.Duration { return d }

// TestDockerNetworkFaults runs each network fault against our paho device
// with bounds from its settings.
func TestDockerNetworkFaults(t *testing.T) {
	t.Parallel()
	base := netLab(t)
	blackhole := func(l *Lab) {
		l.Config.KeepAlive = 2 * time.Second
		l.Config.PingTimeout = time.Second
		// Detection is at most 1.5 × 2 s + 1 s = 4 s (and checkBlackholeCycle's
		// margin), and paho's first reconnect attempt begins at once: the
		// heal at 5 s finds the device in it.
		l.Config.KeepDead = 5 * time.Second
	}

	t.Run("blackhole", func(t *testing.T) {
		t.Parallel()
		l := shortRun(t, base, netfault.Blackhole)
		blackhole(l)
		run, rows := runMttr(t, l)
		checkNetRun(t, l, run, rows)
		for _, c := range rows {
			if !checkBlackholeCycle(t, c, l.Config.KeepAlive, l.Config.PingTimeout, l.Config.ConnectTimeout) {
				t.Errorf("cycle %d: no attempt was open at the heal, though detection ends before it", c.Cycle)
			}
			if c.Lost != 0 {
				t.Errorf("cycle %d: %d QoS 1 messages lost", c.Cycle, c.Lost)
			}
		}
	})

	// With a connect timeout shorter than the SYN's first retransmission,
	// no attempt begun in the blackhole can succeed: one open at the heal
	// waits out what is left of its timeout, and the device gets back with
	// the next, begun after the heal, within a connect timeout and a
	// backoff of it (paho sleeps MTTR_MAX_RECONNECT_INTERVAL at most
	// between attempts).
	t.Run("blackhole/connect-timeout", func(t *testing.T) {
		t.Parallel()
		l := shortRun(t, base, netfault.Blackhole)
		blackhole(l)
		l.Config.ConnectTimeout = 800 * time.Millisecond
		l.Config.MaxReconnectInterval = 100 * time.Millisecond
		l.Config.RestartCount = 3
		run, rows := runMttr(t, l)
		checkNetRun(t, l, run, rows)
		for _, c := range rows {
			if checkBlackholeCycle(t, c, l.Config.KeepAlive, l.Config.PingTimeout, l.Config.ConnectTimeout) {
				t.Errorf("cycle %d: an attempt begun in the blackhole got the device back", c.Cycle)
			}
			const margin = 100 * time.Millisecond
			if wait := at(c.AttemptAt).Sub(at(c.HealedAt)); wait > l.Config.ConnectTimeout+l.Config.MaxReconnectInterval+margin {
				t.Errorf("cycle %d: the attempt that got the device back began %v after the heal, want ≤ %v + %v + %v",
					c.Cycle, wait, l.Config.ConnectTimeout, l.Config.MaxReconnectInterval, margin)
			}
		}
	})

	// 100 % loss drops every packet of the flows, as a blackhole does.
	t.Run("loss=100%", func(t *testing.T) {
		t.Parallel()
		l := shortRun(t, base, netfault.Loss)
		blackhole(l)
		l.Config.Loss = 1
		run, rows := runMttr(t, l)
		checkNetRun(t, l, run, rows)
		for _, c := range rows {
			checkBlackholeCycle(t, c, l.Config.KeepAlive, l.Config.PingTimeout, l.Config.ConnectTimeout)
		}
	})

	// Every connection gets a RST at once: fault_at is when our own idle
	// connection beside the device's got its RST, from the same ss call,
	// and the device knows within 50 ms of that. Each attempt in keep-dead
	// is refused at once, so it makes one per backoff
	// (MTTR_MAX_RECONNECT_INTERVAL=1s) in it.
	t.Run("reset", func(t *testing.T) {
		t.Parallel()
		l := shortRun(t, base, netfault.Reset)
		run, rows := runMttr(t, l)
		checkNetRun(t, l, run, rows)
		for _, c := range rows {
			if det, ok := c.Detection(); !ok || det > 50*time.Millisecond {
				t.Errorf("cycle %d: detection %v (found %v), want ≤ 50ms", c.Cycle, det, ok)
			}
			if min := int(l.Config.KeepDead / l.Config.MaxReconnectInterval); c.ReconnectAttempts < min {
				t.Errorf("cycle %d: %d reconnect attempts in a %v reset with a %v backoff, want ≥ %d",
					c.Cycle, c.ReconnectAttempts, l.Config.KeepDead, l.Config.MaxReconnectInterval, min)
			}
			if rec, ok := c.Recovery(); !ok || rec > l.Config.MaxReconnectInterval+time.Second {
				t.Errorf("cycle %d: recovery %v, want ≤ %v + 1s", c.Cycle, rec, l.Config.MaxReconnectInterval)
			}
			t.Logf("cycle %d: detection %v, %d attempts, recovery %v", c.Cycle, dur(c.Detection()), c.ReconnectAttempts, dur(c.Recovery()))
		}
	})

	// 200 ms each way during the fault: a message published in it waits at
	// least 400 ms for its PUBACK. A cycle's messages outside the fault come
	// in keep-running (1 s), the settling before the fault and after the
	// heal (at most 2 s each) and the recovery (one message): at most 12 at
	// one per 500 ms. Keep-dead is 8 s, 16 messages, so that the median is
	// one of theirs. The connection survives (keep-alive 15 s).
	t.Run("latency", func(t *testing.T) {
		t.Parallel()
		l := shortRun(t, base, netfault.Latency)
		l.Config.Latency = 200 * time.Millisecond
		l.Config.KeepDead = 8 * l.Config.KeepRunning
		run, rows := runMttr(t, l)
		checkNetRun(t, l, run, rows)
		for _, c := range rows {
			if c.PubackMedian < 2*l.Config.Latency {
				t.Errorf("cycle %d: PUBACK median %v with %v latency each way, want ≥ %v", c.Cycle, c.PubackMedian, l.Config.Latency, 2*l.Config.Latency)
			}
			if c.LostAt != 0 || c.Lost != 0 {
				t.Errorf("cycle %d: lost_at %d, %d messages lost: latency below keep-alive lost the connection", c.Cycle, c.LostAt, c.Lost)
			}
			t.Logf("cycle %d: PUBACK median %v, recovery %v", c.Cycle, c.PubackMedian, dur(c.Recovery()))
		}
	})

	// A whole-run link of 200 ms each way, under a broker fault: every
	// message waits at least 400 ms for its PUBACK, and recovery crosses
	// the link at least three round trips after the broker is back (the TLS
	// handshake, CONNECT, then a PUBLISH and its PUBACK).
	t.Run("link/stop", func(t *testing.T) {
		t.Parallel()
		l := shortRun(t, base, "stop")
		l.Config.Link = netfault.Link{Latency: 200 * time.Millisecond}
		run, rows := runMttr(t, l)
		checkNetRun(t, l, run, rows)
		var vars map[string]string
		if err := json.Unmarshal([]byte(run.ConfigJSON), &vars); err != nil || vars["MTTR_LINK"] != l.Config.Link.String() {
			t.Errorf("config_json %s: MTTR_LINK missing", run.ConfigJSON)
		}
		rtt := 2 * l.Config.Link.Latency
		for _, c := range rows {
			if c.PubackMedian < rtt {
				t.Errorf("cycle %d: PUBACK median %v on a %v link, want ≥ %v", c.Cycle, c.PubackMedian, l.Config.Link.Latency, rtt)
			}
			// After ready_at the device still has its TLS handshake's
			// second half, CONNECT/CONNACK and PUBLISH/PUBACK through the
			// link: three round trips less one way, since the link takes
			// its TCP connection at once and its ClientHello may already
			// be on its way when the broker becomes ready.
			floor := 3*rtt - l.Config.Link.Latency
			if rec, ok := c.Recovery(); !ok || rec < floor {
				t.Errorf("cycle %d: recovery %v on a %v link, want ≥ %v", c.Cycle, rec, l.Config.Link.Latency, floor)
			}
			t.Logf("cycle %d: PUBACK median %v, recovery %v", c.Cycle, c.PubackMedian, dur(c.Recovery()))
		}
	})

	// The path drops flows idle for 2 s; in each cycle the device falls
	// silent for the idle timeout and then keep-dead. With a keep-alive of
	// 4 s its flow dies, and only its keep-alive finds out: a ping 4 to 5 s
	// after the last packet it received (paho checks every keep-alive/4),
	// lost a ping timeout later. From the drop (an idle timeout after it
	// fell silent, and it heard last at most a telemetry interval before
	// that), detection lies in [keep-alive + ping timeout − idle timeout −
	// interval, 1.5 × keep-alive + ping timeout − idle timeout], with 250 ms
	// of margin for a loaded machine.
	t.Run("idle/keep-alive longer", func(t *testing.T) {
		t.Parallel()
		l := shortRun(t, base, netfault.Idle)
		l.Config.IdleTimeout = 2 * time.Second
		l.Config.KeepAlive, l.Config.PingTimeout = 4*time.Second, 2*time.Second
		l.Config.KeepDead = 8 * time.Second
		run, rows := runMttr(t, l)
		checkNetRun(t, l, run, rows)
		ka, pt, idle, every := l.Config.KeepAlive, l.Config.PingTimeout, l.Config.IdleTimeout, l.Config.SendInterval
		lo, hi := ka+pt-idle-every, ka*3/2+pt-idle+250*time.Millisecond
		for _, c := range rows {
			if det, ok := c.Detection(); !ok || det < lo || det > hi {
				t.Errorf("cycle %d: detection %v (found %v), want in [%v, %v]", c.Cycle, det, ok, lo, hi)
			}
			t.Logf("cycle %d: detection %v, recovery %v", c.Cycle, dur(c.Detection()), dur(c.Recovery()))
		}
	})

	// With a keep-alive of 2 s under an idle timeout of 5 s, the pings keep
	// the flow alive: nothing is lost.
	t.Run("idle/keep-alive shorter", func(t *testing.T) {
		t.Parallel()
		l := shortRun(t, base, netfault.Idle)
		l.Config.IdleTimeout = 5 * time.Second
		l.Config.KeepAlive = 2 * time.Second
		l.Config.KeepDead = 6 * time.Second
		run, rows := runMttr(t, l)
		checkNetRun(t, l, run, rows)
		for _, c := range rows {
			if c.LostAt != 0 || c.ReconnectedAt != 0 || c.Lost != 0 {
				t.Errorf("cycle %d: lost_at %d, reconnected_at %d, %d messages lost: pings every 2 s lost a flow that idles out after 5 s",
					c.Cycle, c.LostAt, c.ReconnectedAt, c.Lost)
			}
		}
	})

	// The broker's address goes away (its network endpoint is removed: no
	// FIN, no RST) and comes back as another, which the name the device
	// dials answers from the heal on. The device notices by keep-alive, in
	// [ka, 1.5 ka + pt] (as for blackhole, with 250 ms of margin); paho
	// hands its dialer the name at every attempt, so it reaches the new
	// address with the first attempt begun after the heal. One open at the
	// heal, toward the old address, ends within its connect timeout; then
	// paho waits at most MTTR_MAX_RECONNECT_INTERVAL. So it is back within
	// connect timeout + backoff + 1 s (TLS and CONNECT) of the heal.
	t.Run("readdress", func(t *testing.T) {
		t.Parallel()
		l := shortRun(t, base, netfault.Readdress)
		l.Config.KeepAlive, l.Config.PingTimeout = 2*time.Second, time.Second
		l.Config.ConnectTimeout = 2 * time.Second
		l.Config.KeepDead = 4 * time.Second
		l.Config.RestartCount = 3
		run, rows := runMttr(t, l)
		checkNetRun(t, l, run, rows)
		ka, pt, margin := l.Config.KeepAlive, l.Config.PingTimeout, 250*time.Millisecond
		bound := l.Config.ConnectTimeout + l.Config.MaxReconnectInterval + time.Second
		seen := map[string]bool{}
		for _, c := range rows {
			if _, err := netip.ParseAddr(c.BrokerAddress); err != nil || seen[c.BrokerAddress] {
				t.Errorf("cycle %d: broker_address %q: want a new address each cycle (%v)", c.Cycle, c.BrokerAddress, err)
			}
			seen[c.BrokerAddress] = true
			if det, ok := c.Detection(); !ok || det < ka || det > ka*3/2+pt+margin {
				t.Errorf("cycle %d: detection %v (found %v), want in [%v, %v]", c.Cycle, det, ok, ka, ka*3/2+pt+margin)
			}
			back := at(c.ReconnectedAt).Sub(at(c.HealedAt))
			if c.ReconnectedAt == 0 || back > bound {
				t.Errorf("cycle %d: reconnected %v after the heal (at %d), want ≤ %v", c.Cycle, back, c.ReconnectedAt, bound)
			}
			t.Logf("cycle %d: broker at %s, detection %v, reconnected %v after the heal, recovery %v",
				c.Cycle, c.BrokerAddress, dur(c.Detection()), back, dur(c.Recovery()))
		}
	})

	// A rate limit holds each message for its size over the rate: a
	// PUBLISH carries at least its topic and its payload (the smallest our
	// device sends: sequence 1), before the PUBACK can come back. Keep-dead
	// is 8 s, for the median to be a message of the fault's (as for
	// latency).
	t.Run("bandwidth", func(t *testing.T) {
		t.Parallel()
		l := shortRun(t, base, netfault.Bandwidth)
		l.Config.Rate = 1000 // bytes/s
		l.Config.KeepDead = 8 * l.Config.KeepRunning
		id, err := device.ParseConnectionString(l.Config.ConnectionString)
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(device.Telemetry{DeviceID: id.DeviceID, Seq: 1, SentAt: time.Now().UnixNano()})
		size := len(id.Topic()) + len(payload)
		min := time.Duration(size) * time.Second / time.Duration(l.Config.Rate)
		run, rows := runMttr(t, l)
		checkNetRun(t, l, run, rows)
		for _, c := range rows {
			if c.PubackMedian < min {
				t.Errorf("cycle %d: PUBACK median %v at %d B/s, want ≥ %v (%d bytes)", c.Cycle, c.PubackMedian, l.Config.Rate, min, size)
			}
			t.Logf("cycle %d: PUBACK median %v, recovery %v", c.Cycle, c.PubackMedian, dur(c.Recovery()))
		}
	})
}

// checkNetRun checks what every network fault's run shares: completed,
// its settings recorded, the broker never restarted, every cycle in order
// and recovered, the cloud's side untouched.
func checkNetRun(t *testing.T, l *Lab, run store.Run, rows []mttr.Cycle) {
	t.Helper()
	if run.Status != store.StatusCompleted {
		t.Errorf("run status %s", run.Status)
	}
	var vars map[string]string
	if err := json.Unmarshal([]byte(run.ConfigJSON), &vars); err != nil || vars["MTTR_FAULT"] != l.Config.Fault ||
		vars["MTTR_LOSS"] != netfault.FormatLoss(l.Config.Loss) || vars["MTTR_LATENCY"] != l.Config.Latency.String() {
		t.Errorf("config_json %s (%v)", run.ConfigJSON, err)
	}
	if len(rows) != l.Config.RestartCount {
		t.Fatalf("%d cycle rows, want %d", len(rows), l.Config.RestartCount)
	}
	for _, c := range rows {
		checkOrder(t, c)
		if c.ListeningAt != 0 && netfault.Is(l.Config.Fault) {
			t.Errorf("cycle %d: the broker restarted in a network fault", c.Cycle)
		}
		if c.Error != "" {
			t.Errorf("cycle %d: %s", c.Cycle, c.Error)
		}
		// The cloud's side (our sender of commands, the verifier) has its
		// own path: a fault of the devices' path leaves it connected.
		if netfault.Is(l.Config.Fault) && c.CommandsBackAt != 0 {
			t.Errorf("cycle %d: the sender of commands lost its connection in a fault of the devices' path", c.Cycle)
		}
	}
}

// networkFaults are the faults whose runs TestDockerNetworkFaultInterrupted
// and TestDockerNetworkFaultLeftovers stop in the middle.
var networkFaults = []string{netfault.Blackhole, netfault.Loss, netfault.Latency, netfault.Bandwidth, netfault.Reset, netfault.Idle, netfault.Readdress}

// TestDockerNetworkFaultInterrupted stops a run with SIGINT in the middle
// of each network fault: the run cleans up, and neither the broker, its
// namespace holder nor the netfilter helper, whose namespace holds the
// fault's rules, is left, nor the readdress network. The link lives in the
// run's process and ends with it.
func TestDockerNetworkFaultInterrupted(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs mage")
	}
	bed := newLeftovers(t)
	for _, fault := range networkFaults {
		t.Run(fault, func(t *testing.T) { t.Parallel(); bed.interrupt(t, fault) })
	}
}

// TestDockerNetworkFaultLeftovers kills a run with SIGKILL, which runs no
// clean-up, in the middle of each network fault: the next run (another
// container) clears what they left before it starts, as for
// TestDockerNetworkFaultInterrupted. It is not parallel: a run that starts
// beside it would remove what the dead runs left before the next run is
// there to.
func TestDockerNetworkFaultLeftovers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mage")
	}
	newLeftovers(t).kill(t, networkFaults)
}

// newLeftovers compiles the magefile for the runs of t.
func newLeftovers(t *testing.T) leftovers {
	t.Helper()
	bed := leftovers{eng: dockertest.Engine(t), base: netLab(t), compiled: filepath.Join(t.TempDir(), "mttr-lab")}
	compile := exec.Command("go", "tool", "mage", "-compile", bed.compiled)
	compile.Dir = "../.."
	if out, err := compile.CombinedOutput(); err != nil {
		t.Fatalf("mage -compile: %v\n%s", err, out)
	}
	return bed
}

// leftovers is what the runs of TestDockerNetworkFaultInterrupted and
// TestDockerNetworkFaultLeftovers share.
type leftovers struct {
	eng      *broker.Engine
	base     *Lab
	compiled string // the compiled magefile
}

// start runs fault with the compiled binary and returns once the fault is
// in effect.
func (b leftovers) start(t *testing.T, fault string) (*Lab, *command) {
	l := shortRun(t, b.base, fault)
	l.Config.RestartCount = 1
	// Stopped in the fault, it must not heal while other runs start.
	l.Config.KeepDead = 10 * time.Minute
	if fault != netfault.Readdress { // which takes no link: it has a network of its own instead
		l.Config.Link = netfault.Link{Loss: 0.01, Latency: 5 * time.Millisecond} // the helper and the link in every run
	}
	return l, startCommand(t, l, b.compiled, "mttr")
}

// interrupt stops a run of fault with SIGINT in the middle of the fault
// and checks that it left nothing.
func (b leftovers) interrupt(t *testing.T, fault string) {
	l, c := b.start(t, fault)
	c.await(t, "cycle 1/1  fault in effect")
	if err := syscall.Kill(c.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := c.exit(t); code == 0 {
		t.Errorf("exit status 0; stderr:\n%s", c.stderr())
	}
	checkInterrupted(t, b.eng, l, "")
	b.gone(t, l)
}

// kill runs every fault at once, kills each run with SIGKILL in the
// middle of its fault, checks that each left its helper (or readdress
// network), and that the next run removes all of it. Every run starts
// before any is killed: a run's start removes what dead runs left,
// whoever's they were.
func (b leftovers) kill(t *testing.T, faults []string) {
	labs := make([]*Lab, len(faults))
	cmds := make([]*command, len(faults))
	for i, fault := range faults {
		labs[i], cmds[i] = b.start(t, fault)
	}
	for _, c := range cmds {
		c.await(t, "cycle 1/1  fault in effect")
	}
	for _, c := range cmds {
		if err := syscall.Kill(c.cmd.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.exit(t)
	}
	for i, l := range labs {
		if faults[i] == netfault.Readdress {
			if !b.network(t, l) {
				t.Fatal("the killed run's readdress network is not there to be cleaned up")
			}
		} else if _, err := b.eng.Find(t.Context(), broker.NetfilterName(l.Config.Container)); err != nil {
			t.Fatalf("the killed %s run's helper is not there to be cleaned up: %v", faults[i], err)
		}
	}
	next := shortRun(t, b.base, "stop")
	next.Config.DB = labs[0].Config.DB
	next.Config.RestartCount = 1
	runMttr(t, next)
	for _, l := range labs {
		b.gone(t, l)
	}
}

// gone checks that l's broker, holder, netfilter helper and readdress
// network are gone.
func (b leftovers) gone(t *testing.T, l *Lab) {
	t.Helper()
	for _, name := range []string{l.Config.Container, broker.NetfilterName(l.Config.Container), broker.HolderName(l.Config.Container)} {
		if _, err := b.eng.Find(t.Context(), name); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("container %s left behind (%v)", name, err)
		}
	}
	if b.network(t, l) {
		t.Errorf("network %s left behind", broker.ReaddressName(l.Config.Container))
	}
}

// network reports whether l's readdress network exists.
func (b leftovers) network(t *testing.T, l *Lab) bool {
	t.Helper()
	left, err := b.eng.LeftoverNetworks(t.Context(), LabelOwner)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range left {
		if n.Name == broker.ReaddressName(l.Config.Container) {
			return true
		}
	}
	return false
}

// readmeClient returns the README's example client whose text follows
// marker: the Python script, saved in a file and run with python, or the
// shell command given as MTTR_CLIENT_CMD. The examples are what client
// authors copy, so they are what is tested.
func readmeClient(t *testing.T, marker string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), marker)
	if !ok {
		t.Fatalf("README.md has no %q", marker)
	}
	if py, ok := strings.CutPrefix(strings.TrimLeft(rest, "\n"), "```python\n"); ok {
		script, _, _ := strings.Cut(py, "```")
		path := filepath.Join(t.TempDir(), "client.py")
		if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		return python(t) + " " + path
	}
	_, cmd, ok := strings.Cut(rest, "MTTR_CLIENT_CMD='")
	cmd, _, ok2 := strings.Cut(cmd, "' go tool mage mttr")
	if !ok || !ok2 {
		t.Fatalf("README.md: no MTTR_CLIENT_CMD='…' after %q", marker)
	}
	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		needs.Mosquitto.Missing(t, "mosquitto_pub is not installed (Debian: mosquitto-clients)")
	}
	return cmd
}

// TestDockerExternalNetworkFaults runs the README's example clients, which
// nobody here wrote the MQTT stack of, under network faults, measured from
// the broker's side. They dial the path's address and check the broker's
// certificate chain, not its name there.
func TestDockerExternalNetworkFaults(t *testing.T) {
	t.Parallel()
	base := netLab(t)
	pyClient := readmeClient(t, "saved as `client.py`:")
	shClient := readmeClient(t, "A shell loop around `mosquitto_pub`")
	// The Python client reconnects after 1 to 2 s (reconnect_delay_set) and
	// publishes every second; Linux retransmits a SYN the blackhole dropped
	// within a second (its first retransmissions come 1 s apart).
	const reconnectMax, publishEvery, synEvery, margin = 2 * time.Second, time.Second, time.Second, time.Second

	t.Run("python/blackhole", func(t *testing.T) {
		t.Parallel()
		l := shortRun(t, base, netfault.Blackhole)
		l.Config.Client, l.Config.ClientCmd = "external", pyClient
		l.Config.KeepAlive = 2 * time.Second
		// The broker drops the client 1.5 × 2 s = 3 s into the blackhole (and
		// the margin below): it is gone well before the heal at 5 s.
		l.Config.KeepDead = 5 * time.Second
		run, rows := runMttr(t, l)
		checkNetRun(t, l, run, rows)
		for _, c := range rows {
			// The broker drops a client it has not heard from for 1.5 ×
			// keep-alive: in the blackhole, it hears nothing from the fault
			// on (the client's last message came at most a second before).
			det, ok := c.Detection()
			if !ok || det < l.Config.KeepAlive*3/2-publishEvery || det > l.Config.KeepAlive*3/2+margin {
				t.Errorf("cycle %d: the broker saw the loss after %v (found %v), want within [%v, %v]", c.Cycle, det, ok,
					l.Config.KeepAlive*3/2-publishEvery, l.Config.KeepAlive*3/2+margin)
			}
			if c.ReconnectedAt == 0 {
				t.Errorf("cycle %d: no reconnect seen", c.Cycle)
			}
			if rec, ok := c.Recovery(); !ok || rec > reconnectMax+synEvery+publishEvery+margin {
				t.Errorf("cycle %d: recovery %v, want ≤ %v", c.Cycle, rec, reconnectMax+synEvery+publishEvery+margin)
			}
			t.Logf("cycle %d: broker saw the loss after %v, recovery %v", c.Cycle, det, dur(c.Recovery()))
		}
	})

	// readdress: the README's clients look the broker's name up at each
	// connect, in the hosts file the run gives them as /etc/hosts, and so
	// reach the broker's new address; the same shell client made to look
	// it up once, at its start, never does.
	resolveOnce := `MTTR_BROKER_DIAL_HOST=$(getent hosts "$MTTR_BROKER_DIAL_HOST" | cut -d" " -f1); ` + shClient
	for _, tc := range []struct {
		name, cmd string
		back      bool
	}{{"python", pyClient, true}, {"shell", shClient, true}, {"shell/resolve-once", resolveOnce, false}} {
		t.Run(tc.name+"/readdress", func(t *testing.T) {
			t.Parallel()
			l := shortRun(t, base, netfault.Readdress)
			l.Config.Client, l.Config.ClientCmd = "external", tc.cmd
			l.Config.KeepAlive = 5 * time.Second // mosquitto's least
			l.Config.KeepDead = 4 * time.Second
			if !tc.back {
				l.Config.RestartCount, l.Config.RecoveryTimeout = 1, 10*time.Second
			}
			run, rows := runMttr(t, l)
			if run.Status != store.StatusCompleted || len(rows) != l.Config.RestartCount {
				t.Fatalf("run %s, %d rows", run.Status, len(rows))
			}
			for _, c := range rows {
				if _, err := netip.ParseAddr(c.BrokerAddress); err != nil {
					t.Errorf("cycle %d: broker_address %q", c.Cycle, c.BrokerAddress)
				}
				if got := c.ReconnectedAt != 0; got != tc.back {
					t.Errorf("cycle %d: reconnected %v, want %v", c.Cycle, got, tc.back)
				}
				t.Logf("cycle %d: broker at %s, recovery %v", c.Cycle, c.BrokerAddress, dur(c.Recovery()))
			}
		})
	}

	for _, tc := range []struct{ name, cmd string }{{"python", pyClient}, {"shell", shClient}} {
		t.Run(tc.name+"/latency", func(t *testing.T) {
			t.Parallel()
			l := shortRun(t, base, netfault.Latency)
			l.Config.Client, l.Config.ClientCmd = "external", tc.cmd
			l.Config.Latency = 200 * time.Millisecond
			l.Config.KeepDead = 3 * time.Second
			run, rows := runMttr(t, l)
			checkNetRun(t, l, run, rows)
			for _, c := range rows {
				if c.Published == 0 || c.Delivered < c.Published {
					t.Errorf("cycle %d: published %d, delivered %d", c.Cycle, c.Published, c.Delivered)
				}
				t.Logf("cycle %d: published %d, recovery %v", c.Cycle, c.Published, dur(c.Recovery()))
			}
		})
	}
}
