package teleporttest

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

	"github.com/gravitational/teleport/api/types"
)

// newCert returns a fresh self-signed CA certificate (PEM) and its private
// key (PEM), so tests can tell certificates apart and spot leaked keys.
func newCert(t *testing.T, cn string) (certPEM, keyPEM []byte) {
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

func cert(t *testing.T, cn string) []byte {
	t.Helper()
	c, _ := newCert(t, cn)
	return c
}

// commonName reads the subject CN of a single-certificate PEM, to name
// certificates in failure messages and compare them.
func commonName(t *testing.T, p []byte) string {
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

func commonNames(t *testing.T, certs [][]byte) []string {
	t.Helper()
	var out []string
	for _, c := range certs {
		out = append(out, commonName(t, c))
	}
	return out
}

// newDB builds a valid postgres db resource.
func newDB(t *testing.T, name string, labels map[string]string) *types.DatabaseV3 {
	t.Helper()
	d, err := types.NewDatabaseV3(types.Metadata{Name: name, Labels: labels},
		types.DatabaseSpecV3{Protocol: "postgres", URI: name + "-rw.ns.svc.cluster.local:5432"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}
