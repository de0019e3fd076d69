package device

import (
	"crypto/tls"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/certs"
)

// TestParseGroups guards the groups setting's form: names in any case,
// in order, and an unknown, empty or repeated name refused with the name.
func TestParseGroups(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []tls.CurveID
		err  string
	}{
		{"", nil, ""},
		{"X25519", []tls.CurveID{tls.X25519}, ""},
		{"p-256, x25519mlkem768", []tls.CurveID{tls.CurveP256, tls.X25519MLKEM768}, ""},
		{"X25519,,P-256", nil, "member 2 of 3 is empty"},
		{"X448", nil, `unknown group "X448"`},
		{"X25519,x25519", nil, "group X25519 named twice"},
	} {
		got, err := ParseGroups(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseGroups(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseGroups(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if back, _ := ParseGroups(FormatGroups(got)); !slices.Equal(back, got) {
			t.Errorf("FormatGroups(%v) = %q does not read back", got, FormatGroups(got))
		}
	}
}

// TestTLSPolicyHandshakes guards what a policy makes a device do on the
// wire: a second connection resumes the first one's session only with
// Resume, the key exchange uses the first group offered, and two devices
// never share a session cache.
func TestTLSPolicyHandshakes(t *testing.T) {
	pair := certs.For(t.TempDir(), "localhost")
	if _, err := certs.Generate(pair, 1); err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(pair.CertPath, pair.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{kp}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	groups := make(chan tls.CurveID, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() == nil {
				groups <- tc.ConnectionState().CurveID
				// A byte after the session ticket, so that the client reads
				// the ticket before it closes.
				_, _ = tc.Write([]byte{1})
			}
			tc.Close()
		}
	}()
	pool, err := certs.Pool(pair.CertPath)
	if err != nil {
		t.Fatal(err)
	}
	base := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	connect := func(conf *tls.Config) (resumed bool, group tls.CurveID) {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), conf)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		return c.ConnectionState().DidResume, <-groups
	}
	for _, tc := range []struct {
		name   string
		policy TLSPolicy
		group  tls.CurveID
	}{
		{"default", TLSPolicy{}, tls.X25519MLKEM768},
		{"resume, P-256", TLSPolicy{Resume: true, Groups: []tls.CurveID{tls.CurveP256}}, tls.CurveP256},
		{"X25519", TLSPolicy{Groups: []tls.CurveID{tls.X25519}}, tls.X25519},
	} {
		t.Run(tc.name, func(t *testing.T) {
			one, two := tc.policy.Apply(base), tc.policy.Apply(base)
			if r, g := connect(one); r || g != tc.group {
				t.Errorf("first connection: resumed %v, group %v; want a full handshake with %v", r, g, tc.group)
			}
			if r, _ := connect(two); r {
				t.Error("a second device resumed the first one's session")
			}
			if r, _ := connect(one); r != tc.policy.Resume {
				t.Errorf("reconnect resumed %v, want %v", r, tc.policy.Resume)
			}
		})
	}
	if base.ClientSessionCache != nil || base.CurvePreferences != nil {
		t.Error("Apply changed its base")
	}
	if (TLSPolicy{}).Apply(base) != base {
		t.Error("the default policy copied its base: every device would carry its own")
	}
}
