package certs

import (
	"slices"
	"strings"
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseIssuerRef(t *testing.T) {
	for in, want := range map[string]string{"Issuer/vault": "Issuer vault", "ClusterIssuer/pca": "ClusterIssuer pca"} {
		ref, err := ParseIssuerRef(in)
		if err != nil || ref.Kind+" "+ref.Name != want || ref.Group != "cert-manager.io" {
			t.Errorf("%s: %+v, %v", in, ref, err)
		}
	}
	for _, bad := range []string{"", "vault", "Issuer/", "Secret/x", "Issuer/a/b", "issuer/x"} {
		if _, err := ParseIssuerRef(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCertificates(t *testing.T) {
	c := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pg", UID: "u"}}
	c.Spec.Certificates = &cnpgv1.CertificatesConfiguration{ServerAltDNSNames: []string{"pg.example.com"}}
	ref, _ := ParseIssuerRef("ClusterIssuer/ca")
	r := ReplicationCertificate(c, ref, map[string]string{"l": "v"})
	if r.Name != "pg-teleport-replication" || r.Spec.SecretName != r.Name || r.Spec.CommonName != "streaming_replica" ||
		!slices.Contains(r.Spec.Usages, cmapi.UsageClientAuth) || slices.Contains(r.Spec.Usages, cmapi.UsageServerAuth) ||
		r.Spec.SecretTemplate.Labels[ReloadLabel] != "true" || r.Spec.SecretTemplate.Labels["l"] != "v" ||
		r.OwnerReferences[0].UID != "u" || r.Spec.IssuerRef.Kind != "ClusterIssuer" {
		t.Fatalf("replication: %+v", r)
	}
	s := ServerCertificate(c, ref, "cluster.local", nil)
	names := strings.Join(s.Spec.DNSNames, " ")
	if s.Spec.CommonName != "pg-rw" || !slices.Contains(s.Spec.Usages, cmapi.UsageServerAuth) || len(s.Spec.DNSNames) != 13 ||
		!strings.Contains(names, "pg-ro.ns.svc.cluster.local") || !strings.HasSuffix(names, "pg.example.com") || !strings.HasPrefix(names, "pg-rw pg-rw.ns ") {
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
