package netfault

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestParseLink(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Link
		err  string
	}{
		{in: "", want: Link{}},
		{in: "latency=300ms,jitter=50ms,loss=1%,rate=384kbit", want: Link{Latency: 300 * time.Millisecond, Jitter: 50 * time.Millisecond, Loss: 0.01, Rate: 48000}},
		{in: " rate = 1mbit , latency=0s", want: Link{Rate: 125000}},
		{in: "3G", want: Profiles["3g"]},
		{in: "loss=100%", want: Link{Loss: 1}},
		{in: "latency", err: "want key=value"},
		{in: "delay=1s", err: `unknown key "delay"`},
		{in: "latency=fast", err: "not a duration"},
		{in: "latency=1.5ms", err: "whole milliseconds"},
		{in: "latency=2m", err: "want 0 to 1m0s"},
		{in: "latency=10ms,jitter=20ms", err: "jitter 20ms is more than latency 10ms"},
		{in: "loss=30", err: "want a percentage"},
		{in: "loss=101%", err: "want 0% to 100%"},
		{in: "rate=64", err: "want a rate"},
		{in: "rate=1bit", err: "want 8kbit to 8000gbit"},
		{in: "latency=10ms,latency=20ms", err: `key "latency" given twice`},
		{in: "latency=10ms,,loss=1%", err: "member 2 of 3 is empty"},
		{in: "loss=0.001%", err: "in steps of 0.01%"},
		{in: "loss=12.345%", err: "in steps of 0.01%"},
		{in: "loss=0.25%", want: Link{Loss: 0.0025}},
	} {
		got, err := ParseLink(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseLink(%q) = %+v, %v; want error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseLink(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if back, err := ParseLink(got.String()); err != nil || back != got {
			t.Errorf("ParseLink(%q) = %+v, %v; String() %q does not read back", tc.in, back, err, got.String())
		}
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{"64kbit": 8000, "1Mbit": 125000, "100kbps": 100000, "2gbit": 250_000_000, "8000bit": 1000} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	// The link limits in whole kB/s: what is stored is what is applied.
	for in, want := range map[string]string{"12kbit": "want a multiple of 8kbit (1 kB/s), such as 8kbit", "1500bps": "such as 8kbit", "7kbit": "want 8kbit to 8000gbit", "fast": "want a rate"} {
		if _, err := ParseRate(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRate(%q): %v, want an error with %q", in, err, want)
		}
	}
	for b, want := range map[int64]string{8000: "64kbit", 125000: "1mbit", 1001: "8008bit"} {
		if got := FormatRate(b); got != want {
			t.Errorf("FormatRate(%d) = %q; want %q", b, got, want)
		}
	}
}

// TestScript checks each filter's nftables script against a golden file:
// what it drops, rejects or lets through, each way.
func TestScript(t *testing.T) {
	for name, f := range map[string]Filter{
		"clear":          {},
		"blackhole":      {Blackhole: true},
		"reset":          {Reset: true},
		"loss":           {Loss: []float64{0.3}},
		"link-and-fault": {Loss: []float64{0.015, 1}, Blackhole: true},
		"own-ports":      {Loss: []float64{0.3}, Reset: true, Own: Ports{31768, 32767}},
		"idle":           {Idle: 2500 * time.Millisecond, Loss: []float64{0.01}, Own: Ports{31768, 32767}},
	} {
		t.Run(name, func(t *testing.T) {
			got := f.Script(8883)
			path := filepath.Join("testdata", name+".nft")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("script:\n%s\nwant:\n%s", got, want)
			}
			checkParses(t, got)
		})
	}
}

// checkParses has nft check a script, where nft and a network namespace
// of our own (unshare -n) are at hand.
func checkParses(t *testing.T, script string) {
	t.Helper()
	unshare, err1 := exec.LookPath("unshare")
	nft, err2 := exec.LookPath("nft")
	if err1 != nil || err2 != nil || exec.Command(unshare, "-n", "true").Run() != nil {
		t.Log("no nft or no network namespace of our own here: the script is not checked by nft")
		return
	}
	if out, err := exec.Command(unshare, "-n", nft, "-c", script).CombinedOutput(); err != nil {
		t.Errorf("nft -c: %v\n%s", err, out)
	}
}

// TestOwnPorts checks that the tool's own band lies outside the kernel's
// ephemeral range, and that Dial connects from it.
func TestOwnPorts(t *testing.T) {
	p, err := OwnPorts()
	if err != nil {
		t.Skip(err)
	}
	b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	var lo, hi int
	fmt.Sscan(string(b), &lo, &hi)
	if p.Hi-p.Lo+1 != ownBand || p.Lo < 1024 || p.Hi > 65535 || (p.Hi >= lo && p.Lo <= hi) {
		t.Errorf("own ports %s overlap the ephemeral range %d-%d or the privileged ports", p, lo, hi)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range 3 {
		c, err := p.Dial(t.Context(), net.Dialer{}, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if port := c.LocalAddr().(*net.TCPAddr).Port; port < p.Lo || port > p.Hi {
			t.Errorf("dialled from port %d, outside %s", port, p)
		}
		c.Close()
	}
}

func TestIs(t *testing.T) {
	for _, f := range Faults {
		if !Is(f) {
			t.Errorf("Is(%q) = false", f)
		}
	}
	if Is("stop") || Filtered(Latency) || Filtered(Bandwidth) || !Filtered(Blackhole) || !Filtered(Loss) || !Filtered(Reset) ||
		Filtered(Readdress) || Linked(Readdress) || !Linked(Latency) || !Linked(Bandwidth) || Linked(Blackhole) {
		t.Error("Is/Filtered: wrong mechanism for a fault")
	}
}

// TestHosts changes the name's answer and checks that Lookup and Dial
// follow it, and that the file keeps its length.
func TestHosts(t *testing.T) {
	a, b := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	h, err := NewHosts(t.TempDir(), BrokerName, netip.MustParseAddr("10.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	before, _ := os.ReadFile(h.Path())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln2, err := net.Listen("tcp", "127.0.0.2:"+port)
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range []net.Listener{ln, ln2} {
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	for _, addr := range []netip.Addr{a, b, netip.MustParseAddr("fd00::1234:5678:9abc:def0"), a} {
		if err := h.Set(addr); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(h.Path())
		if len(data) != len(before) {
			t.Errorf("after Set(%s) the file has %d bytes, want %d: a reader could see half a line", addr, len(data), len(before))
		}
		got, err := h.Lookup(strings.ToUpper(BrokerName))
		if err != nil || got != addr {
			t.Errorf("Lookup after Set(%s) = %s, %v", addr, got, err)
		}
		if !addr.Is4() {
			continue
		}
		c, err := h.Dial(nil)(t.Context(), net.Dialer{}, "tcp", net.JoinHostPort(BrokerName, port))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != addr {
			t.Errorf("Dial reached %s, want %s", got, addr)
		}
		c.Close()
	}
	if _, err := h.Dial(nil)(t.Context(), net.Dialer{}, "tcp", "other.test:1"); err == nil || !strings.Contains(err.Error(), "other.test") {
		t.Errorf("Dial of a name the file lacks: %v", err)
	}
	path := h.Path()
	h.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("Close left %s: %v", path, err)
	}
}

// TestRemoveStaleHosts removes the hosts files of dead runs only.
func TestRemoveStaleHosts(t *testing.T) {
	dir := t.TempDir()
	live, err := NewHosts(dir, BrokerName, netip.MustParseAddr("10.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	dead := filepath.Join(dir, "mttr-hosts-999999999-1")
	other := filepath.Join(dir, "mttr-hosts-notapid-1")
	for _, f := range []string{dead, other} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := RemoveStaleHosts(dir, func(pid int) bool { return pid == os.Getpid() })
	if err != nil || len(removed) != 1 || removed[0] != dead {
		t.Errorf("removed %v, %v; want only %s", removed, err, dead)
	}
	for _, f := range []string{live.Path(), other} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
