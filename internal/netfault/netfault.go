// Package netfault says what the network faults do to the path between the
// devices and the broker, and with which mechanism: packet-filter rules in
// the broker's network namespace (nftables scripts, which keep TCP's own
// behaviour: dropped SYNs, real RSTs), or a userspace link that every
// device dials instead of the broker (delay, jitter and rate, which the
// kernel here cannot add without netem). It parses their settings, writes
// the rules, and dials the broker (TCP, then TLS) from the band of ports
// the rules leave to the tool's own clients; applying the rules is the
// test bed's job.
package netfault

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/mttrlab/mttr/internal/commalist"
	"math"
	mrand "math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The network faults, as MTTR_FAULT names them.
const (
	Blackhole = "blackhole" // drop every packet both ways, SYNs included, for keep-dead
	Loss      = "loss"      // drop MTTR_LOSS of the packets both ways, for keep-dead
	Latency   = "latency"   // add MTTR_LATENCY ± MTTR_JITTER each way, for keep-dead
	Bandwidth = "bandwidth" // limit the rate to MTTR_RATE each way, for keep-dead
	Reset     = "reset"     // RST every connection at once, and every new one for keep-dead
	Idle      = "idle"      // the path drops flows idle for MTTR_IDLE_TIMEOUT, silently, for the whole run; the devices fall silent for keep-dead
	Readdress = "readdress" // the broker's address goes away for keep-dead, and it comes back at a new one, which BrokerName then answers
)

// Faults are the network faults.
var Faults = []string{Blackhole, Loss, Latency, Bandwidth, Reset, Idle, Readdress}

// Is reports whether fault is a network fault.
func Is(fault string) bool {
	for _, f := range Faults {
		if f == fault {
			return true
		}
	}
	return false
}

// Filtered reports whether fault acts through packet-filter rules in the
// broker's network namespace (the link needs none of that).
func Filtered(fault string) bool {
	return fault == Blackhole || fault == Loss || fault == Reset || fault == Idle
}

// Linked reports whether fault acts through the userspace link.
func Linked(fault string) bool { return fault == Latency || fault == Bandwidth }

// Link is what a path does to every packet: the whole run's MTTR_LINK, or
// a fault's window. The zero Link does nothing.
type Link struct {
	Latency time.Duration // added each way
	Jitter  time.Duration // ± around Latency
	Loss    float64       // fraction of packets dropped each way, in [0, 1]
	Rate    int64         // bytes per second each way; 0 is unlimited
}

// Delays reports whether the link needs the userspace proxy: delay,
// jitter or a rate limit.
func (l Link) Delays() bool { return l.Latency > 0 || l.Jitter > 0 || l.Rate > 0 }

// String is MTTR_LINK's form of l; "" for the zero Link.
func (l Link) String() string {
	var parts []string
	if l.Latency > 0 {
		parts = append(parts, "latency="+l.Latency.String())
	}
	if l.Jitter > 0 {
		parts = append(parts, "jitter="+l.Jitter.String())
	}
	if l.Loss > 0 {
		parts = append(parts, "loss="+FormatLoss(l.Loss))
	}
	if l.Rate > 0 {
		parts = append(parts, "rate="+FormatRate(l.Rate))
	}
	return strings.Join(parts, ",")
}

// Profiles are named links MTTR_LINK accepts besides key=value lists.
// Their figures are the usual emulator presets for those radio links.
var Profiles = map[string]Link{
	"3g":   {Latency: 100 * time.Millisecond, Jitter: 20 * time.Millisecond, Loss: 0.005, Rate: 768_000 / 8},
	"edge": {Latency: 200 * time.Millisecond, Jitter: 50 * time.Millisecond, Loss: 0.01, Rate: 200_000 / 8},
}

// ParseLink reads MTTR_LINK: a profile name ("3g") or a comma list of
// latency=, jitter=, loss= and rate= (e.g. "latency=300ms,loss=1%,rate=384kbit").
func ParseLink(s string) (Link, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Link{}, nil
	}
	if p, ok := Profiles[strings.ToLower(s)]; ok {
		return p, nil
	}
	pairs, err := commalist.Pairs(s)
	if err != nil {
		return Link{}, fmt.Errorf("%w (want key=value members: latency, jitter, loss, rate; or a profile: 3g, edge)", err)
	}
	var l Link
	for _, p := range pairs {
		var err error
		switch p.Key {
		case "latency":
			l.Latency, err = ParseDelay(p.Value)
		case "jitter":
			l.Jitter, err = ParseDelay(p.Value)
		case "loss":
			l.Loss, err = ParseLoss(p.Value)
		case "rate":
			l.Rate, err = ParseRate(p.Value)
		default:
			return Link{}, fmt.Errorf("unknown key %q (latency, jitter, loss, rate)", p.Key)
		}
		if err != nil {
			return Link{}, fmt.Errorf("%s: %w", p.Key, err)
		}
	}
	if l.Jitter > l.Latency {
		return Link{}, fmt.Errorf("jitter %s is more than latency %s: a packet cannot leave before it was sent", l.Jitter, l.Latency)
	}
	return l, nil
}

// MaxDelay bounds a latency or jitter: the link holds data that long.
const MaxDelay = time.Minute

// ParseDelay reads a latency or jitter: a duration of at most MaxDelay,
// in whole milliseconds (the link's resolution).
func ParseDelay(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q: not a duration (e.g. 200ms)", s)
	case d < 0 || d > MaxDelay:
		return 0, fmt.Errorf("%q: want 0 to %s", s, MaxDelay)
	case d%time.Millisecond != 0:
		return 0, fmt.Errorf("%q: whole milliseconds only", s)
	}
	return d, nil
}

// ParseLoss reads a loss percentage, "30%" (the % is required), as a
// fraction. Its resolution is 0.01 %.
func ParseLoss(s string) (float64, error) {
	num, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	if !ok {
		return 0, fmt.Errorf("%q: want a percentage, e.g. 30%%", s)
	}
	p, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(p) || p < 0 || p > 100 {
		return 0, fmt.Errorf("%q: want 0%% to 100%%", s)
	}
	// The packet filter draws in steps of 1/10 000: 0.01 %.
	if steps := p * 100; math.Abs(steps-math.Round(steps)) > 1e-6 {
		return 0, fmt.Errorf("%q: in steps of 0.01%%", s)
	}
	return p / 100, nil
}

// FormatLoss is ParseLoss's form of a fraction.
func FormatLoss(f float64) string { return strconv.FormatFloat(f*100, 'f', -1, 64) + "%" }

var rateUnits = []struct {
	suffix string
	bytes  float64 // bytes per second per unit
}{
	{"gbit", 1e9 / 8}, {"mbit", 1e6 / 8}, {"kbit", 1e3 / 8}, {"bit", 1.0 / 8},
	{"gbps", 1e9}, {"mbps", 1e6}, {"kbps", 1e3}, {"bps", 1},
}

// ParseRate reads a rate in tc's units (kbit, mbit, gbit for bits per
// second; kbps, mbps, gbps, bps for bytes per second) as bytes per second,
// at least 1 kB/s (the link counts kilobytes).
func ParseRate(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	for _, u := range rateUnits {
		num, ok := strings.CutSuffix(t, u.suffix)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil || math.IsNaN(v) || v <= 0 {
			break
		}
		b := v * u.bytes
		if b < 1000 || b > 1e12 {
			return 0, fmt.Errorf("%q: want 8kbit to 8000gbit", s)
		}
		// The link limits in whole kilobytes per second.
		if b != math.Trunc(b) || int64(b)%1000 != 0 {
			return 0, fmt.Errorf("%q: want a multiple of 8kbit (1 kB/s), such as %s", s, FormatRate(max(1, int64(b)/1000)*1000))
		}
		return int64(b), nil
	}
	return 0, fmt.Errorf("%q: want a rate such as 64kbit, 1mbit or 100kbps", s)
}

// FormatRate writes bytes per second in the largest bit unit that keeps
// it whole.
func FormatRate(b int64) string {
	bits := b * 8
	for _, u := range []struct {
		suffix string
		div    int64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if bits%u.div == 0 {
			return strconv.FormatInt(bits/u.div, 10) + u.suffix
		}
	}
	return strconv.FormatInt(bits, 10) + "bit"
}

// Filter is what the broker's network namespace does to the broker's TCP
// traffic at one moment.
type Filter struct {
	Blackhole bool      // drop every packet both ways, SYNs included: no RST, no FIN
	Reset     bool      // answer every packet that reaches the broker's port with a RST
	Loss      []float64 // independent random drops each way, as fractions
	// Idle, when set, drops every packet of a flow that has carried none
	// either way for that long, silently, as a NAT or load balancer that
	// forgot it does; a new connection (a SYN) starts a new flow.
	Idle time.Duration
	// Own are the local ports of the tool's own clients (the verifier, the
	// sender of commands, the readiness probe): the cloud's side, whose
	// path no fault of the devices' touches.
	Own Ports
}

// Table is the nftables table the rules live in, in the broker's
// namespace only.
const Table = "mttr"

// Script is the nftables script that replaces whatever Table held with f,
// for the broker's port, in one transaction. An empty f only removes it.
func (f Filter) Script(port int) string {
	var b strings.Builder
	// Creating the table first makes deleting it valid when it is absent.
	fmt.Fprintf(&b, "add table inet %s\ndelete table inet %s\n", Table, Table)
	var in, out []string
	// Packets to the broker from the devices, and back to them.
	to, from := fmt.Sprintf("tcp dport %d", port), fmt.Sprintf("tcp sport %d", port)
	if f.Own != (Ports{}) {
		to += fmt.Sprintf(" tcp sport != %s", f.Own)
		from += fmt.Sprintf(" tcp dport != %s", f.Own)
	}
	var sets string
	if f.Idle > 0 {
		// A flow is the device's address and port. live holds those that
		// carried a packet within Idle (each packet renews it); a packet of
		// a flow that is not live makes it dead, for good: what a NAT that
		// forgot a mapping does.
		sets = fmt.Sprintf("\tset live {\n\t\ttype ipv4_addr . inet_service\n\t\tflags dynamic,timeout\n\t\ttimeout %dms\n\t}\n"+
			"\tset dead {\n\t\ttype ipv4_addr . inet_service\n\t\tflags dynamic,timeout\n\t\ttimeout 1h\n\t}\n", f.Idle.Milliseconds())
		in = append(in,
			to+" tcp flags & (syn|ack) == syn delete @dead { ip saddr . tcp sport } update @live { ip saddr . tcp sport }",
			to+" ip saddr . tcp sport @dead drop",
			to+" ip saddr . tcp sport != @live add @dead { ip saddr . tcp sport } drop",
			to+" update @live { ip saddr . tcp sport }")
		out = append(out,
			from+" ip daddr . tcp dport @dead drop",
			from+" ip daddr . tcp dport != @live add @dead { ip daddr . tcp dport } drop",
			from+" update @live { ip daddr . tcp dport }")
	}
	for _, p := range f.Loss {
		if p <= 0 {
			continue
		}
		// numgen draws 0..9999 per packet: p in steps of 0.01 %.
		// A loss of 100 % drops every packet: the same as a blackhole.
		n := int(math.Round(p * 10000))
		if n >= 10000 {
			f.Blackhole = true
			continue
		}
		in = append(in, fmt.Sprintf("%s numgen random mod 10000 < %d drop", to, n))
		out = append(out, fmt.Sprintf("%s numgen random mod 10000 < %d drop", from, n))
	}
	if f.Blackhole {
		in = append(in, to+" drop")
		out = append(out, from+" drop")
	}
	if f.Reset {
		// The RSTs leave through the output hook: nothing there drops them.
		in = append(in, to+" reject with tcp reset")
	}
	if len(in) == 0 {
		return b.String()
	}
	fmt.Fprintf(&b, "table inet %s {\n%s", Table, sets)
	for _, c := range []struct {
		name, hook string
		rules      []string
	}{{"in", "input", in}, {"out", "output", out}} {
		if len(c.rules) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook %s priority filter; policy accept;\n", c.name, c.hook)
		for _, r := range c.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// ErrNoFilter is returned where a filtered fault meets a broker whose
// network namespace cannot be entered (a local process).
var ErrNoFilter = errors.New("needs the broker's own network namespace (MTTR_BROKER=docker)")

// Ports is a band of local ports, [Lo, Hi].
type Ports struct{ Lo, Hi int }

func (p Ports) String() string { return fmt.Sprintf("%d-%d", p.Lo, p.Hi) }

// ownBand is how many ports OwnPorts sets aside.
const ownBand = 1000

// OwnPorts is the band of local ports the tool's own clients connect from
// in a run with a network fault: the 1000 ports below the kernel's
// ephemeral range (net.ipv4.ip_local_port_range), or above it when there
// is no room below, so that no device's connection, which the kernel
// gives an ephemeral port, comes from one of them.
func OwnPorts() (Ports, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return Ports{}, fmt.Errorf("the ephemeral port range: %w", err)
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		return Ports{}, fmt.Errorf("the ephemeral port range %q: %w", strings.TrimSpace(string(b)), err)
	}
	switch {
	case lo-ownBand >= 1024:
		return Ports{lo - ownBand, lo - 1}, nil
	case hi+ownBand <= 65535:
		return Ports{hi + 1, hi + ownBand}, nil
	}
	return Ports{}, fmt.Errorf("the ephemeral port range %d-%d leaves no %d ports for the tool's own clients", lo, hi, ownBand)
}

// Dial opens a TCP connection, as net.Dialer.DialContext does.
type Dial func(ctx context.Context, d net.Dialer, network, addr string) (net.Conn, error)

// DialTLS opens a TLS session with addr over a TCP connection that dial
// opens (nil: from any local port), both within ctx. The server name to
// verify is cfg's, or addr's host when cfg names none.
func DialTLS(ctx context.Context, dial Dial, addr string, cfg *tls.Config) (*tls.Conn, error) {
	if dial == nil {
		dial = Ports{}.Dial
	}
	raw, err := dial(ctx, net.Dialer{}, "tcp", addr)
	if err != nil {
		return nil, err
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return conn, nil
}

// Dial connects to addr from a port of p, trying others while the one
// drawn is taken. A zero p dials from any port.
func (p Ports) Dial(ctx context.Context, d net.Dialer, network, addr string) (net.Conn, error) {
	if p == (Ports{}) {
		return d.DialContext(ctx, network, addr)
	}
	var err error
	for range 20 {
		d.LocalAddr = &net.TCPAddr{Port: p.Lo + mrand.IntN(p.Hi-p.Lo+1)}
		var c net.Conn
		if c, err = d.DialContext(ctx, network, addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			return c, err
		}
	}
	return nil, fmt.Errorf("dial %s: no free local port in %s: %w", addr, p, err)
}
