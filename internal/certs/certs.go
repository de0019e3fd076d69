// Package certs makes the self-signed TLS certificate that the broker serves
// and the device trusts. It believes one thing above all: the host name goes
// into a Subject Alternative Name, not only the Common Name, because Go's TLS
// (and every modern verifier) ignores the Common Name.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside a host's directory.
const (
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
)

// Pair locates the certificate and key of one host.
type Pair struct {
	Host     string
	CertPath string
	KeyPath  string
}

// For returns where the pair for host lives under dir (dir/host/cert.pem and
// dir/host/key.pem). It does not touch the file system.
func For(dir, host string) Pair {
	d := filepath.Join(dir, host)
	return Pair{Host: host, CertPath: filepath.Join(d, CertFile), KeyPath: filepath.Join(d, KeyFile)}
}

// ValidateHost reports whether host can name a certificate: an IP address or
// a DNS name of letters, digits, hyphens and dots.
func ValidateHost(host string) error {
	if host == "" {
		return errors.New("host name is empty")
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	name := host
	if len(name) > 253 {
		return fmt.Errorf("host name %q: longer than 253 characters", host)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("host name %q: empty or over-long label", host)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host name %q: label %q starts or ends with '-'", host, label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("host name %q: invalid character %q", host, r)
			}
		}
	}
	return nil
}

// Template returns the certificate template for host, valid from now for the
// given number of days: CN = host, SANs = host (DNS or IP; localhost also
// 127.0.0.1 and ::1), usable as a TLS server certificate and as its own root.
func Template(host string, days int, now time.Time) (*x509.Certificate, error) {
	if err := ValidateHost(host); err != nil {
		return nil, err
	}
	if days < 1 {
		return nil, fmt.Errorf("validity %d days: must be at least 1", days)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host, Organization: []string{"MTTR lab"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.AddDate(0, 0, days),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	if strings.EqualFold(host, "localhost") {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
	}
	return tmpl, nil
}

// Generate writes a new self-signed certificate and its private key for
// host into pair's paths (key mode 0600) and returns the certificate's
// SHA-256 fingerprint. Files are written to temporary names and renamed,
// so a failure leaves the previous pair (or nothing) in place.
func Generate(pair Pair, days int) (string, error) {
	tmpl, err := Template(pair.Host, days, time.Now())
	if err != nil {
		return "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("marshal key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(pair.CertPath), 0o755); err != nil {
		return "", fmt.Errorf("certificate directory: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(pair.KeyPath), 0o700); err != nil {
		return "", fmt.Errorf("key directory: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeAtomic(pair.KeyPath, keyPEM, 0o600); err != nil {
		return "", err
	}
	if err := writeAtomic(pair.CertPath, certPEM, 0o644); err != nil {
		return "", err
	}
	return Fingerprint(der), nil
}

// Fingerprint is the SHA-256 of a certificate's DER bytes, as colon-separated
// upper-case hex (the form openssl x509 -fingerprint -sha256 prints).
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	parts := make([]string, 0, len(sum))
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// Load reads the certificate at path and returns it parsed, with its
// fingerprint.
func Load(path string) (*x509.Certificate, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("read certificate: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, "", fmt.Errorf("read certificate %s: no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("parse certificate %s: %w", path, err)
	}
	return cert, Fingerprint(block.Bytes), nil
}

// Pool returns a certificate pool holding only the certificate at path.
func Pool(path string) (*x509.CertPool, error) {
	cert, _, err := Load(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
