package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
)

func TestParseIssuerRef(t *testing.T) {
	for in, want := range map[string]string{"Issuer/vault": "Issuer vault", "ClusterIssuer/pca": "ClusterIssuer pca"} {
		ref, err := dbspec.ParseIssuerRef(in)
		if err != nil || ref.Kind+" "+ref.Name != want || ref.Group != "cert-manager.io" {
			t.Errorf("%s: %+v, %v", in, ref, err)
		}
	}
	for _, bad := range []string{"", "vault", "Issuer/", "Secret/x", "Issuer/a/b", "issuer/x"} {
		if _, err := dbspec.ParseIssuerRef(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCertificates(t *testing.T) {
	c := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pg", UID: "u"}}
	c.Spec.Certificates = &cnpgv1.CertificatesConfiguration{ServerAltDNSNames: []string{"pg.example.com"}}
	ref, _ := dbspec.ParseIssuerRef("ClusterIssuer/ca")
	r := ReplicationCertificate(c, ref, map[string]string{"l": "v"})
	if r.Name != "pg-teleport-replication" || r.Spec.SecretName != r.Name || r.Spec.CommonName != "streaming_replica" ||
		!slices.Contains(r.Spec.Usages, cmapi.UsageClientAuth) || slices.Contains(r.Spec.Usages, cmapi.UsageServerAuth) ||
		r.Spec.SecretTemplate.Labels[ReloadLabel] != "true" || r.Spec.SecretTemplate.Labels["l"] != "v" ||
		r.OwnerReferences[0].UID != "u" || r.Spec.IssuerRef.Kind != "ClusterIssuer" {
		t.Fatalf("replication: %+v", r)
	}
	s := ServerCertificate(c, ref, "cluster.local", []string{"pooler.ns.svc"}, nil)
	names := strings.Join(s.Spec.DNSNames, " ")
	if s.Spec.CommonName != "pg-rw" || !slices.Contains(s.Spec.Usages, cmapi.UsageServerAuth) || len(s.Spec.DNSNames) != 14 ||
		!strings.Contains(names, "pg-ro.ns.svc.cluster.local") || !strings.HasSuffix(names, "pg.example.com pooler.ns.svc") || !strings.HasPrefix(names, "pg-rw pg-rw.ns ") {
		t.Fatalf("server: %s %v", s.Spec.CommonName, s.Spec.DNSNames)
	}
}

func TestIssuerChain(t *testing.T) {
	root, inter, leaf := newCA(t, "root"), newCA(t, "intermediate"), newCA(t, "leaf")
	tlsCrt := append(append([]byte{}, leaf.cert...), inter.cert...)
	got := blocks(t, IssuerChain(root.cert, tlsCrt))
	want := append(blocks(t, root.cert), blocks(t, inter.cert)...)
	if len(got) != 2 || string(got[0]) != string(want[0]) || string(got[1]) != string(want[1]) {
		t.Fatalf("want root then intermediate (no leaf), got %d certificates", len(got))
	}
	if got := blocks(t, IssuerChain(root.cert, leaf.cert)); len(got) != 1 {
		t.Fatalf("no chain in tls.crt: want the root only, got %d", len(got))
	}
}

func TestPoolerCertificate(t *testing.T) {
	c := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pg", UID: "u"}}
	ref, _ := dbspec.ParseIssuerRef("Issuer/client")
	p := PoolerCertificate(c, ref, map[string]string{"l": "v"})
	if p.Name != "pg-teleport-pooler" || p.Spec.SecretName != "pg-pooler" || p.Spec.CommonName != "cnpg_pooler_pgbouncer" ||
		!slices.Contains(p.Spec.Usages, cmapi.UsageClientAuth) || slices.Contains(p.Spec.Usages, cmapi.UsageServerAuth) ||
		p.Spec.SecretTemplate.Labels[ReloadLabel] != "true" || p.Spec.IssuerRef.Name != "client" {
		t.Fatalf("pooler: %+v", p)
	}
	// cert-manager must renew before CNPG would (7 days before expiry), which cannot sign in issuer mode.
	if p.Spec.RenewBefore.Duration <= 7*24*time.Hour || p.Spec.RenewBefore.Duration >= p.Spec.Duration.Duration {
		t.Fatalf("renewBefore %s, duration %s", p.Spec.RenewBefore.Duration, p.Spec.Duration.Duration)
	}
}

// sign issues a leaf for cn from ca (client auth unless server).
func sign(t *testing.T, issuer ca, cn string, server bool) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	parent, err := x509.ParseCertificate(blocks(t, issuer.cert)[0])
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := pem.Decode(issuer.key)
	pk, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	eku := x509.ExtKeyUsageClientAuth
	if server {
		eku = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now(),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{eku}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, pk)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestVerifyClient(t *testing.T) {
	own, tp, other := newCA(t, "pg-ca"), newCA(t, "teleport"), newCA(t, "other")
	bundle, err := ClientCABundle(own.cert, [][]byte{tp.cert})
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyClient(sign(t, own, "cnpg_pooler_pgbouncer", false), bundle, time.Now()); err != nil {
		t.Errorf("signed by the own CA: %v", err)
	}
	if err := VerifyClient(sign(t, other, "cnpg_pooler_pgbouncer", false), bundle, time.Now()); err == nil || !strings.Contains(err.Error(), "CN=cnpg_pooler_pgbouncer") {
		t.Errorf("another CA: want a refusal naming the certificate, got %v", err)
	}
	if err := VerifyClient(sign(t, own, "x", true), bundle, time.Now()); err == nil {
		t.Error("a server-auth certificate passed as a client certificate")
	}
	if err := VerifyClient(sign(t, own, "x", false), bundle, time.Now().Add(2*time.Hour)); err == nil {
		t.Error("an expired certificate passed")
	}
}
