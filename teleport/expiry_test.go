package teleport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/identityfile"
	"github.com/gravitational/trace"
)

// writeIdentity writes an identity file whose TLS certificate expires at notAfter.
func writeIdentity(t *testing.T, notAfter time.Time) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cnpg-teleport"},
		NotBefore: notAfter.Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "identity")
	if err := identityfile.Write(&identityfile.IdentityFile{
		PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		Certs:      identityfile.Certs{TLS: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), SSH: []byte("ssh-cert")},
		CACerts:    identityfile.CACerts{TLS: [][]byte{cert(t, "ca")}},
	}, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestIdentityExpiry(t *testing.T) {
	at := time.Now().Add(42 * time.Minute).Truncate(time.Second)
	got, err := IdentityFileExpiry(writeIdentity(t, at))
	if err != nil || !got.Equal(at) {
		t.Fatalf("expiry %v, %v; want %v", got, err, at)
	}
	if _, err := IdentityFileExpiry(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing file has an expiry")
	}
}

// TestWrapSaysTheIdentityExpired: once the loaded identity has expired,
// every error says so first, and keeps its trace kind.
func TestWrapSaysTheIdentityExpired(t *testing.T) {
	denied := trace.AccessDenied("access denied")
	c := &APIClient{path: "/var/run/tbot/identity"}
	if err := c.wrap(denied, "teleport: get db %q", "x"); strings.Contains(err.Error(), "expired") {
		t.Fatalf("unknown expiry: %v", err)
	}
	c.notAfter.Store(time.Now().Add(time.Minute).UnixNano())
	if err := c.wrap(denied, "teleport: get db %q", "x"); strings.Contains(err.Error(), "expired") {
		t.Fatalf("not expired yet: %v", err)
	}
	at := time.Now().Add(-time.Minute)
	c.notAfter.Store(at.UnixNano())
	err := c.wrap(denied, "teleport: get db %q", "x")
	if !strings.HasPrefix(err.Error(), "the controller's Teleport identity /var/run/tbot/identity expired at "+at.UTC().Format(time.RFC3339)) ||
		!strings.Contains(err.Error(), "access denied") || !trace.IsAccessDenied(err) {
		t.Fatalf("expired: %q (access denied kept: %v)", err, trace.IsAccessDenied(err))
	}
	if c.wrap(nil, "x") != nil || errors.Is(c.wrap(nil, "x"), denied) {
		t.Fatal("nil wrapped into an error")
	}
}
