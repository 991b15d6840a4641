package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// TestFoundation proves the Kubernetes + PostgreSQL half of the world: the
// real CNPG schema, the real cert-manager issuing the server certificate,
// and PostgreSQL serving it under verify-full with `hostssl ... cert`.
func TestFoundation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := world.Start(t, world.Options{})
	const ns, name = "foundation", "demo"
	if err := w.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}

	// The apiserver validates with CNPG's real schema: instances >= 1.
	bad := &cnpgv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "invalid"},
		Spec:       cnpgv1.ClusterSpec{Instances: 0, StorageConfiguration: cnpgv1.StorageConfiguration{Size: "1Gi"}},
	}
	err := w.Client.Create(ctx, bad)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.instances") {
		t.Fatalf("invalid Cluster: want an Invalid error on spec.instances, got %v", err)
	}

	// The real cert-manager: a server CA, a server certificate for the rw
	// service, and a client CA with one client certificate.
	serverCA := serverPKI(ctx, t, w, ns, name)
	rwName := name + "-rw." + ns + ".svc.cluster.local"
	if _, err := w.CreateCA(ctx, ns, "demo-client-ca"); err != nil {
		t.Fatal(err)
	}
	app := clientCert(ctx, t, w, ns, "app", "demo-client-ca")
	if _, err := w.CreateCA(ctx, ns, "foreign-ca"); err != nil {
		t.Fatal(err)
	}
	foreign := clientCert(ctx, t, w, ns, "app-foreign", "foreign-ca")

	cluster := &cnpgv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: cnpgv1.ClusterSpec{
			Instances:            1,
			StorageConfiguration: cnpgv1.StorageConfiguration{Size: "1Gi"},
			Certificates: &cnpgv1.CertificatesConfiguration{
				ServerCASecret:  "demo-server-ca",
				ServerTLSSecret: "demo-server",
				ClientCASecret:  "demo-client-ca",
			},
			PostgresConfiguration: cnpgv1.PostgresConfiguration{PgHBA: []string{"hostssl all all all cert"}},
		},
	}
	if err := w.Client.Create(ctx, cluster); err != nil {
		t.Fatalf("valid Cluster: %v", err)
	}

	pg, err := w.StartPostgres(ctx, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, `CREATE ROLE app LOGIN`); err != nil {
		t.Fatal(err)
	}

	conn, err := world.ConnectTLS(ctx, rwName, "app", serverCA.Data["ca.crt"], app)
	if err != nil {
		t.Fatalf("verify-full with a client certificate of the client CA: %v", err)
	}
	var user string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != "app" {
		t.Fatalf("current_user = %q, %v; want app", user, err)
	}
	_ = conn.Close(ctx)

	// verify-full is in force: trusting another CA fails on the server cert.
	if c, err := world.ConnectTLS(ctx, rwName, "app", foreign.Data["ca.crt"], app); err == nil {
		_ = c.Close(ctx)
		t.Fatal("a client trusting a foreign CA connected: verify-full not in force")
	}
	// A client certificate from another CA is refused under hostssl ... cert.
	c, err := world.ConnectTLS(ctx, rwName, "app", serverCA.Data["ca.crt"], foreign)
	if err == nil {
		_ = c.Close(ctx)
		t.Fatal("a client certificate from a foreign CA was accepted")
	}
	t.Logf("foreign client certificate refused: %v", err)
}
