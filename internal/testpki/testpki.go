// Package testpki makes throwaway certificates for the tests of several
// packages (teleport and its fake, controllers, dbspec), which cannot import
// each other's test files. It is imported by tests only, never by the binary.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// NewCert returns a fresh self-signed CA certificate (PEM) and its private
// key (PEM), so tests can tell certificates apart and spot leaked keys.
func NewCert(t testing.TB, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// Cert is NewCert without the key.
func Cert(t testing.TB, cn string) []byte {
	t.Helper()
	c, _ := NewCert(t, cn)
	return c
}

// CommonName reads the subject CN of a single-certificate PEM, to name
// certificates in failure messages and compare them.
func CommonName(t testing.TB, p []byte) string {
	t.Helper()
	b, rest := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("not exactly one CERTIFICATE block: %q", p)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.Subject.CommonName
}

// CommonNames is CommonName of each certificate.
func CommonNames(t testing.TB, certs [][]byte) []string {
	t.Helper()
	var out []string
	for _, c := range certs {
		out = append(out, CommonName(t, c))
	}
	return out
}
