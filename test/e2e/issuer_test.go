package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
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
// server intermediates, as the playground seed has it), opted in while CNPG
// creates the replica (switched under its join, it never joins): the controller issues
// the replication and server certificates through cert-manager, points the
// Cluster at them and at a bundle of the client issuer's chain + Teleport's
// CA, and verify-full (Teleport), replication and `tsh db connect` work. A
// Pooler gets PgBouncer's certificate from the client issuer under the name
// CNPG's automated integration expects: the Cluster stays healthy, pgbench
// and Teleport go through it; a Pooler whose own certificate the bundle does
// not trust is warned about; opting out hands <cluster>-pooler back to CNPG.
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

	// Opted in while CNPG creates the replica: its join Job has loaded
	// CNPG's own server CA and replication certificate, and would never
	// join if they were switched under it (a CI run saw it stuck so, when
	// cert-manager was slow); the controller switches once it has joined.
	c := world.NewCluster(ns, name, 2)
	t0 := time.Now()
	if err := w.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, 2*time.Minute, "CNPG creating the replica", func() error {
		if err := w.Client.Get(ctx, client.ObjectKeyFromObject(c), c); err != nil {
			return err
		}
		if c.Status.Phase != cnpgv1.PhaseCreatingReplica {
			return fmt.Errorf("phase %q", c.Status.Phase)
		}
		return nil
	})
	patch := client.MergeFrom(c.DeepCopy())
	c.Annotations = map[string]string{
		dbspec.AnnotationRegister:     "true",
		dbspec.AnnotationClientIssuer: "ClusterIssuer/client-int",
		dbspec.AnnotationServerIssuer: "ClusterIssuer/server-int",
		dbspec.AnnotationPoolers:      name + "-pooler-rw",
	}
	if err := w.Client.Patch(ctx, c, patch); err != nil {
		t.Fatal(err)
	}
	t.Logf("opted in at %s, during %q", time.Since(t0).Round(100*time.Millisecond), c.Status.PhaseReason)
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

	// A Pooler: <cluster>-pooler from the client issuer, the Cluster's (so
	// CNPG keeps the integration automated), the Cluster healthy throughout.
	const pooler = name + "-pooler-rw"
	if err := w.Client.Create(ctx, newPooler(ns, name, pooler, nil)); err != nil {
		t.Fatal(err)
	}
	poolerHost := pooler + "." + ns + ".svc"
	world.Eventually(t, 2*time.Minute, "verify-full through "+poolerHost, func() error {
		_, err := appQuery(ctx, w, poolerHost, app, root.Data["ca.crt"])
		return err
	})
	pgb := secret(ctx, t, w, ns, name+"-pooler")
	if pgb.Annotations["cert-manager.io/issuer-name"] != "client-int" || !metav1.IsControlledBy(pgb, &cur) {
		t.Fatalf("%s-pooler: issuer %q, owners %+v", name, pgb.Annotations["cert-manager.io/issuer-name"], pgb.OwnerReferences)
	}
	if _, err := w.WaitClusterHealthy(ctx, ns, name, time.Minute); err != nil {
		t.Fatal(err)
	}
	bench(t, ctx, w, poolerHost, app, root.Data["ca.crt"], benchSeconds())
	world.Eventually(t, time.Minute, "tsh db connect through the Pooler", func() error {
		out, err := sql(ctx, alice, p+"pooler-rw", "teleport_read", "SELECT 'via=' || current_user;")
		if err != nil || !strings.Contains(out, "via=teleport_read") {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})

	// A Pooler logging in with a certificate the bundle does not trust: warned, on the Pooler.
	if _, err := w.CreateCA(ctx, ns, "stranger"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.IssueCertificate(ctx, &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "stranger-pgbouncer"},
		Spec: cmapi.CertificateSpec{SecretName: "stranger-pgbouncer", CommonName: "cnpg_pooler_pgbouncer",
			Usages:    []cmapi.KeyUsage{cmapi.UsageClientAuth, cmapi.UsageDigitalSignature},
			IssuerRef: cmmeta.IssuerReference{Kind: cmapi.IssuerKind, Name: "stranger"}},
	}); err != nil {
		t.Fatal(err)
	}
	manual := newPooler(ns, name, name+"-pooler-manual", nil)
	manual.Spec.PgBouncer.ServerTLSSecret = &cnpgv1.LocalObjectReference{Name: "stranger-pgbouncer"}
	manual.Spec.PgBouncer.AuthQuery = "SELECT usename, passwd FROM public.user_search($1)"
	if err := w.Client.Create(ctx, manual); err != nil {
		t.Fatal(err)
	}
	note := b.event(ns, manual.Name, "Warning", controllers.ReasonPoolerUntrusted)
	if !strings.Contains(note, "serverTLSSecret stranger-pgbouncer") || !strings.Contains(note, "sign it with the client issuer") {
		t.Fatalf("warning: %s", note)
	}
	t.Logf("untrusted Pooler: %s", note)

	// Opt out: CNPG signs <cluster>-pooler again, with its own CA.
	if err := w.UpdateCluster(ctx, ns, name, func(c *cnpgv1.Cluster) { delete(c.Annotations, dbspec.AnnotationRegister) }); err != nil {
		t.Fatal(err)
	}
	own := secret(ctx, t, w, ns, name+"-ca")
	world.Eventually(t, 2*time.Minute, "CNPG's own <cluster>-pooler again", func() error {
		var s corev1.Secret
		if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name + "-pooler"}, &s); err != nil {
			return err
		}
		if s.Labels[dbspec.LabelManagedBy] != "" {
			return fmt.Errorf("still ours")
		}
		ok, err := signedBy(s.Data["tls.crt"], own.Data["ca.crt"])
		if err != nil || !ok {
			return fmt.Errorf("not signed by %s-ca yet (%w)", name, err)
		}
		return nil
	})
	if _, err := w.WaitClusterHealthy(ctx, ns, name, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// signedBy reports whether the first certificate of leafPEM verifies against caPEM.
func signedBy(leafPEM, caPEM []byte) (bool, error) {
	lb, _ := pem.Decode(leafPEM)
	if lb == nil {
		return false, fmt.Errorf("no PEM")
	}
	leaf, err := x509.ParseCertificate(lb.Bytes)
	if err != nil {
		return false, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil, nil
}
