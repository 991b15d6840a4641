package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// clusterCA makes, with the real cert-manager, a CA Certificate in the
// cert-manager namespace issued by issuer, and a ClusterIssuer name over it.
func clusterCA(t *testing.T, ctx context.Context, w *world.World, name string, issuer cmmeta.IssuerReference) {
	t.Helper()
	if _, err := w.IssueCertificate(ctx, &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cert-manager", Name: name},
		Spec: cmapi.CertificateSpec{IsCA: true, CommonName: name, SecretName: name, IssuerRef: issuer,
			PrivateKey: &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.Client.Create(ctx, &cmapi.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{CA: &cmapi.CAIssuer{SecretName: name}}},
	}); err != nil {
		t.Fatal(err)
	}
}

// TestIssuerMode proves issuer mode on a three-tier PKI (root -> client and
// server intermediates, as the playground seed has it): the controller issues
// the replication and server certificates through cert-manager, points the
// Cluster at them and at a bundle of the client issuer's chain + Teleport's
// CA, and verify-full (Teleport), replication and `tsh db connect` work.
func TestIssuerMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const ns, name = "issuer", "pg"
	b := newTrustBed(t, ctx, ns)
	w := b.w
	if err := w.Client.Create(ctx, &cmapi.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "selfsigned"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
	}); err != nil {
		t.Fatal(err)
	}
	clusterCA(t, ctx, w, "root", cmmeta.IssuerReference{Kind: cmapi.ClusterIssuerKind, Name: "selfsigned"})
	clusterCA(t, ctx, w, "client-int", cmmeta.IssuerReference{Kind: cmapi.ClusterIssuerKind, Name: "root"})
	clusterCA(t, ctx, w, "server-int", cmmeta.IssuerReference{Kind: cmapi.ClusterIssuerKind, Name: "root"})
	root := secret(ctx, t, w, "cert-manager", "root")

	c := world.NewCluster(ns, name, 2)
	c.Annotations = map[string]string{
		controllers.AnnotationRegister:     "true",
		controllers.AnnotationClientIssuer: "ClusterIssuer/client-int",
		controllers.AnnotationServerIssuer: "ClusterIssuer/server-int",
	}
	t0 := time.Now()
	if err := w.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, 4*time.Minute, "healthy on cnpg-teleport's certificates", func() error {
		got, err := w.WaitClusterHealthy(ctx, ns, name, time.Second)
		if err != nil {
			return err
		}
		st := got.Status.Certificates
		if st.ClientCASecret != name+"-teleport-ca" || st.ReplicationTLSSecret != name+"-teleport-replication" ||
			st.ServerTLSSecret != name+"-teleport-server" || st.ServerCASecret != name+"-teleport-server" {
			return fmt.Errorf("status certificates %+v", st.CertificatesConfiguration)
		}
		return nil
	})
	t.Logf("healthy on issued certificates in %s", time.Since(t0).Round(100*time.Millisecond))
	bundle := secret(ctx, t, w, ns, name+"-teleport-ca")
	if _, hasKey := bundle.Data["ca.key"]; hasKey {
		t.Fatal("issuer mode: the bundle must carry no key")
	}
	if !strings.Contains(string(bundle.Data["ca.crt"]), strings.TrimSpace(string(root.Data["ca.crt"]))) {
		t.Fatal("the bundle lacks the root CA (OpenSSL needs it to verify a client chain)")
	}
	var cur cnpgv1.Cluster
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cur); err != nil {
		t.Fatal(err)
	}
	p := "k1-" + ns + "-" + name + "-"
	world.Eventually(t, time.Minute, "registered with the server issuer's CA", func() error {
		out, err := b.tp.Tctl(ctx, "", "get", "db/"+p+"rw", "--format=json")
		if err != nil {
			return err
		}
		if !strings.Contains(strings.ReplaceAll(string(out), `\n`, "\n"), strings.TrimSpace(string(root.Data["ca.crt"]))) {
			return fmt.Errorf("tls.ca_cert is not the root of the server chain")
		}
		return nil
	})

	alice, err := b.tp.User(ctx, "alice", []string{"teleport_read", "teleport_write"}, []string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	b.expect(alice, ns, p+"rw", "teleport_read", name+"-1", "false")
	b.expect(alice, ns, p+"ro", "teleport_read", name+"-2", "true")

	// A plain client verifies the server with the root alone (verify-full).
	app := secret(ctx, t, w, ns, name+"-app")
	conn, err := world.ConnectPassword(ctx, name+"-rw."+ns+".svc", "app", string(app.Data["password"]), "app", root.Data["ca.crt"])
	if err != nil {
		t.Fatalf("verify-full with the root CA: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)

	// Replication over the cert-manager-issued certificate: a switchover makes
	// the old primary rejoin with it, and a row written then reaches it.
	switchover(t, ctx, w, ns, name, name+"-2")
	b.insert(alice, p+"rw", "teleport_write", 7)
	b.expect(alice, ns, p+"ro", "teleport_read", name+"-1", "true")
	b.waitSum(alice, p+"ro", 7) // the rejoined replica
}
