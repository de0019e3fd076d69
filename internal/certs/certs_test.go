package certs

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGenerateFields(t *testing.T) {
	tests := []struct {
		host    string
		wantDNS []string
		wantIPs []string
	}{
		{"localhost", []string{"localhost"}, []string{"127.0.0.1", "::1"}},
		{"alohomora.net", []string{"alohomora.net"}, nil},
		{"192.0.2.10", nil, []string{"192.0.2.10"}},
		{"2001:db8::1", nil, []string{"2001:db8::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			pair := For(t.TempDir(), tt.host)
			fp, err := Generate(pair, 30)
			if err != nil {
				t.Fatal(err)
			}
			cert, loadedFP, err := Load(pair.CertPath)
			if err != nil {
				t.Fatal(err)
			}
			if fp != loadedFP || len(fp) != 95 {
				t.Errorf("fingerprint %q, loaded %q", fp, loadedFP)
			}
			if cert.Subject.CommonName != tt.host {
				t.Errorf("CN = %q, want %q", cert.Subject.CommonName, tt.host)
			}
			if !slices.Equal(cert.DNSNames, tt.wantDNS) {
				t.Errorf("DNS SANs = %v, want %v", cert.DNSNames, tt.wantDNS)
			}
			var ips []string
			for _, ip := range cert.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.wantIPs) {
				t.Errorf("IP SANs = %v, want %v", ips, tt.wantIPs)
			}
			if days := cert.NotAfter.Sub(cert.NotBefore).Hours() / 24; days < 29.9 || days > 30.1 {
				t.Errorf("validity %.2f days, want 30", days)
			}
			if cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
				t.Errorf("key usage %b lacks digital signature or cert sign", cert.KeyUsage)
			}
			if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
				t.Errorf("ext key usage %v lacks server auth", cert.ExtKeyUsage)
			}
			st, err := os.Stat(pair.KeyPath)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("key mode %o, want 600", st.Mode().Perm())
			}
			kp, err := tls.LoadX509KeyPair(pair.CertPath, pair.KeyPath)
			if err != nil {
				t.Fatalf("key does not match certificate: %v", err)
			}
			if _, ok := kp.PrivateKey.(*ecdsa.PrivateKey); !ok {
				t.Errorf("key type %T", kp.PrivateKey)
			}
			pool, err := Pool(pair.CertPath)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range append(tt.wantDNS, tt.wantIPs...) {
				if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
					t.Errorf("verify as %s with itself as root: %v", name, err)
				}
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example"}); err == nil {
				t.Error("verified for a name it does not carry")
			}
		})
	}
}

// TestGoTLSHandshake serves the certificate and dials it with Go's TLS,
// trusting only the certificate and verifying the host name.
func TestGoTLSHandshake(t *testing.T) {
	pair := For(t.TempDir(), "alohomora.net")
	if _, err := Generate(pair, 1); err != nil {
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
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	pool, err := Pool(pair.CertPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		wantOK bool
	}{{"alohomora.net", true}, {"localhost", false}} {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: tc.name})
		if conn != nil {
			conn.Close()
		}
		if (err == nil) != tc.wantOK {
			t.Errorf("handshake as %s: err = %v, want ok = %v", tc.name, err, tc.wantOK)
		}
	}
}

func TestOpenSSLVerify(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	pair := For(t.TempDir(), "localhost")
	if _, err := Generate(pair, 1); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "verify", "-CAfile", pair.CertPath, pair.CertPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	out, err = exec.Command("openssl", "verify", "-CAfile", pair.CertPath, "-verify_hostname", "localhost", pair.CertPath).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify -verify_hostname localhost: %v\n%s", err, out)
	}
}

func TestValidateHost(t *testing.T) {
	for _, h := range []string{"", "-bad.example", "bad-.example", "a..b", "under_score.example", "spa ce", "x/y", strings.Repeat("a", 64) + ".example"} {
		if err := ValidateHost(h); err == nil {
			t.Errorf("ValidateHost(%q) = nil, want error", h)
		}
	}
	for _, h := range []string{"localhost", "alohomora.net", "192.0.2.10", "::1", "a-b.c-d.example"} {
		if err := ValidateHost(h); err != nil {
			t.Errorf("ValidateHost(%q) = %v", h, err)
		}
	}
}

func TestGenerateBadInputWritesNothing(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		host string
		days int
	}{{"", 10}, {"bad host", 10}, {"localhost", 0}} {
		if _, err := Generate(For(dir, tc.host), tc.days); err == nil {
			t.Errorf("Generate(%q, %d) = nil error", tc.host, tc.days)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("bad input left %d entries in %s", len(entries), dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "localhost")); !os.IsNotExist(err) {
		t.Errorf("localhost dir exists after failure: %v", err)
	}
}
