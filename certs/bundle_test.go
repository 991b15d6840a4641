package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type ca struct {
	cert, key, pkcs8 []byte
}

func newCA(t *testing.T, cn string) ca {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return ca{
		cert:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ec}),
		pkcs8: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
	}
}

func blocks(t *testing.T, b []byte) [][]byte {
	t.Helper()
	ders, err := certificates(b)
	if err != nil {
		t.Fatal(err)
	}
	return ders
}

func TestClientCABundle(t *testing.T) {
	own, tA, tB := newCA(t, "pg-ca"), newCA(t, "teleport-a"), newCA(t, "teleport-b")

	ab, err := ClientCABundle(own.cert, [][]byte{tA.cert, tB.cert})
	if err != nil {
		t.Fatal(err)
	}
	got := blocks(t, ab)
	if len(got) != 3 || !bytes.Equal(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: got[0]}), own.cert) {
		t.Fatalf("want the own CA first and 3 certificates, got %d", len(got))
	}
	// Stable: Teleport's order (active/additional swap during a rotation) and
	// duplicates do not change the bytes.
	ba, err := ClientCABundle(own.cert, [][]byte{tB.cert, tA.cert, tA.cert, own.cert})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ab, ba) {
		t.Fatal("the same trust in another order gave other bytes")
	}
	// Only certificates ever: a key in any input is refused, not copied.
	for name, in := range map[string][][]byte{
		"key in Teleport's input": {append(append([]byte{}, tA.cert...), tA.key...)},
		"garbage":                 {[]byte("not pem")},
	} {
		if _, err := ClientCABundle(own.cert, in); !errors.Is(err, ErrNotCertificate) {
			t.Errorf("%s: want ErrNotCertificate, got %v", name, err)
		}
	}
	if _, err := ClientCABundle(append(append([]byte{}, own.cert...), own.key...), [][]byte{tA.cert}); !errors.Is(err, ErrNotCertificate) {
		t.Errorf("key in the own CA input: want ErrNotCertificate, got %v", err)
	}
	if _, err := ClientCABundle(nil, [][]byte{tA.cert}); err == nil {
		t.Error("no own CA: want an error")
	}
	if _, err := ClientCABundle(own.cert, nil); err == nil {
		t.Error("no Teleport CA: a bundle that trusts nobody new must not be built")
	}
}

func TestCheckSigningKey(t *testing.T) {
	own, other := newCA(t, "pg-ca"), newCA(t, "teleport")
	bundle, err := ClientCABundle(own.cert, [][]byte{other.cert})
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckSigningKey(bundle, own.key); err != nil {
		t.Fatalf("own key, own CA first: %v", err)
	}
	if err := CheckSigningKey(bundle, own.pkcs8); err == nil {
		t.Error("a PKCS#8 key breaks CNPG's signing: must be refused")
	}
	if err := CheckSigningKey(bundle, other.key); err == nil {
		t.Error("a key that does not match the first certificate: must be refused")
	}
	wrongOrder := append(append([]byte{}, other.cert...), own.cert...)
	if err := CheckSigningKey(wrongOrder, own.key); err == nil {
		t.Error("the own CA not first: must be refused")
	}
}

func TestBundleSecret(t *testing.T) {
	c := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pg", UID: "uid-1"}}
	s := BundleSecret(c, "pg-teleport-ca", []byte("crt"), []byte("key"), map[string]string{"a": "b", ReloadLabel: "false"})
	if s.Namespace != "ns" || s.Name != "pg-teleport-ca" || s.Labels[ReloadLabel] != "true" || s.Labels["a"] != "b" {
		t.Fatalf("metadata %+v", s.ObjectMeta)
	}
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != "uid-1" || s.OwnerReferences[0].Kind != "Cluster" {
		t.Fatalf("owner %+v", s.OwnerReferences)
	}
	if string(s.Data["ca.crt"]) != "crt" || string(s.Data["ca.key"]) != "key" || len(s.Data) != 2 {
		t.Fatalf("data %v", s.Data)
	}
}

func TestPreviousOwnCA(t *testing.T) {
	old, renewed, tp := newCA(t, "pg-ca"), newCA(t, "pg-ca"), newCA(t, "teleport")
	bundle, err := ClientCABundle(old.cert, [][]byte{tp.cert})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if PreviousOwnCA(bundle, nil, old.cert, now) != nil {
		t.Error("own CA unchanged: nothing to carry")
	}
	prev := PreviousOwnCA(bundle, nil, renewed.cert, now)
	if !bytes.Equal(prev, old.cert) {
		t.Fatalf("renewed: want the old own CA carried, got %q", prev)
	}
	next, err := ClientCABundle(renewed.cert, [][]byte{tp.cert, prev})
	if err != nil || len(blocks(t, next)) != 3 || !bytes.HasPrefix(next, renewed.cert) {
		t.Fatalf("bundle after renewal: %v, %d certificates", err, len(blocks(t, next)))
	}
	// The next pass: the bundle starts with the renewed CA; the kept one stays.
	if again := PreviousOwnCA(next, prev, renewed.cert, now); !bytes.Equal(again, old.cert) {
		t.Fatalf("the next pass dropped the carried CA: %q", again)
	}
	if PreviousOwnCA(next, prev, renewed.cert, now.Add(2*time.Hour)) != nil {
		t.Error("an expired predecessor must not be carried")
	}
	if PreviousOwnCA(nil, nil, renewed.cert, now) != nil || PreviousOwnCA([]byte("x"), nil, renewed.cert, now) != nil {
		t.Error("no or unreadable bundle: nothing to carry")
	}
	if PreviousOwnCA(next, renewed.cert, renewed.cert, now) != nil {
		t.Error("own's first certificate is never its own predecessor")
	}
}
