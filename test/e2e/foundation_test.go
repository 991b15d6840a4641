package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// TestFoundation proves the world itself: CNPG's schema and webhooks reject
// what a real cluster rejects; the real CNPG operator and instance manager
// bring a Cluster to "Cluster in healthy state" and PostgreSQL answers
// verify-full on the rw service with CNPG's own server certificate; a Pooler
// serves verify-full through the real PgBouncer; owner references and
// namespace deletion really delete; and nothing the world started outlives it.
func TestFoundation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	w := world.Start(t, world.Options{})
	const ns, name = "foundation", "demo"
	if err := w.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}

	// The CRD schema: instances >= 1.
	bad := world.NewCluster(ns, "invalid", 0)
	err := w.Client.Create(ctx, bad)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.instances") {
		t.Fatalf("instances 0: want an Invalid error on spec.instances, got %v", err)
	}
	// CNPG's validating webhook (not the schema): a fixed parameter.
	bad = world.NewCluster(ns, "fixed-port", 1)
	bad.Spec.PostgresConfiguration.Parameters = map[string]string{"port": "5433"}
	err = w.Client.Create(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "Can't set fixed configuration parameter") {
		t.Fatalf("fixed parameter: want CNPG's webhook to reject it, got %v", err)
	}

	// A 1-instance Cluster whose server certificate also names the Pooler's service.
	const pooler = name + "-pooler-rw"
	c := world.NewCluster(ns, name, 1)
	c.Spec.Certificates = &cnpgv1.CertificatesConfiguration{ServerAltDNSNames: []string{pooler + "." + ns + ".svc"}}
	t0 := time.Now()
	if err := w.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitClusterHealthy(ctx, ns, name, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("1-instance Cluster healthy in %s", time.Since(t0).Round(100*time.Millisecond))
	// The mutating webhook defaulted the Cluster as CNPG does.
	var got cnpgv1.Cluster
	if err := w.Client.Get(ctx, client.ObjectKeyFromObject(c), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Bootstrap == nil || got.Spec.Bootstrap.InitDB == nil || got.Spec.Bootstrap.InitDB.Database != "app" {
		t.Fatalf("the Cluster was not defaulted by CNPG's mutating webhook: %+v", got.Spec)
	}

	serverCA := secret(ctx, t, w, ns, name+"-ca")
	app := secret(ctx, t, w, ns, name+"-app")
	query := func(host string, rootCA []byte) (string, error) {
		conn, err := world.ConnectPassword(ctx, host, string(app.Data["username"]), string(app.Data["password"]), "app", rootCA)
		if err != nil {
			return "", err
		}
		defer func() { _ = conn.Close(ctx) }()
		var s string
		err = conn.QueryRow(ctx, "SELECT current_user || ' ' || (SELECT setting FROM pg_settings WHERE name = 'ssl')").Scan(&s)
		return s, err
	}
	rw := name + "-rw." + ns + ".svc"
	world.Eventually(t, 30*time.Second, "verify-full on "+rw, func() error {
		s, err := query(rw, serverCA.Data["ca.crt"])
		if err == nil && s != "app on" {
			t.Fatalf("current_user, ssl = %q", s)
		}
		return err
	})
	// verify-full is in force: the server certificate does not chain to another CA.
	other, err := w.CreateCA(ctx, ns, "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := query(rw, other.Data["ca.crt"]); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("trusting another CA: want a verification failure, got %v", err)
	}

	// A Pooler (automated integration): the real PgBouncer serves verify-full.
	p := &cnpgv1.Pooler{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pooler},
		Spec: cnpgv1.PoolerSpec{
			Cluster: cnpgv1.LocalObjectReference{Name: name}, Type: cnpgv1.PoolerTypeRW, Instances: ptr(int32(1)),
			PgBouncer: &cnpgv1.PgBouncerSpec{PoolMode: cnpgv1.PgBouncerPoolModeSession},
		},
	}
	t0 = time.Now()
	if err := w.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	host := pooler + "." + ns + ".svc"
	world.Eventually(t, 2*time.Minute, "verify-full through PgBouncer on "+host, func() error {
		s, err := query(host, serverCA.Data["ca.crt"])
		if err == nil && !strings.HasPrefix(s, "app ") {
			t.Fatalf("through the pooler: %q", s)
		}
		return err
	})
	t.Logf("Pooler serving in %s", time.Since(t0).Round(100*time.Millisecond))
	var dep appsv1.Deployment
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: pooler}, &dep); err != nil {
		t.Fatal(err)
	}
	if n := podCount(ctx, t, w, ns, "cnpg.io/poolerName", pooler); n != 1 {
		t.Fatalf("pooler pods: %d, want 1 (made by the Deployment and ReplicaSet controllers)", n)
	}

	// Owner references: deleting the Pooler deletes its Deployment, ReplicaSet and Pod.
	if err := w.Client.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, time.Minute, "the Pooler's Deployment and Pods garbage-collected", func() error {
		err := w.Client.Get(ctx, client.ObjectKeyFromObject(&dep), &appsv1.Deployment{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("deployment still there (%w)", err)
		}
		if n := podCount(ctx, t, w, ns, "cnpg.io/poolerName", pooler); n != 0 {
			return fmt.Errorf("%d pooler pods", n)
		}
		return nil
	})

	// Namespace deletion empties the namespace, a running Cluster's Pods included.
	const doomed = "doomed"
	if err := w.Namespace(ctx, doomed); err != nil {
		t.Fatal(err)
	}
	if err := w.Client.Create(ctx, world.NewCluster(doomed, name, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitClusterHealthy(ctx, doomed, name, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := w.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: doomed}}); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, 2*time.Minute, "namespace "+doomed+" deleted", func() error {
		err := w.Client.Get(ctx, client.ObjectKey{Name: doomed}, &corev1.Namespace{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %w; %d pods", err, podCount(ctx, t, w, doomed, "cnpg.io/cluster", name))
	})

	// Nothing the world started outlives it, though a Cluster still runs.
	if n := podCount(ctx, t, w, ns, "cnpg.io/cluster", name); n != 1 {
		t.Fatalf("%d instance pods of %s/%s before the world stops, want 1", n, ns, name)
	}
	if len(w.LeftRunning()) == 0 {
		t.Fatal("LeftRunning finds nothing while the world runs: it could not see a leftover either")
	}
	// Nothing the world started outlives it.
	w.Stop()
	if left := w.LeftRunning(); len(left) > 0 {
		t.Fatalf("still running after the world stopped:\n%s", strings.Join(left, "\n"))
	}
}

func ptr[T any](v T) *T { return &v }

func secret(ctx context.Context, t *testing.T, w *world.World, ns, name string) *corev1.Secret {
	t.Helper()
	var s corev1.Secret
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func podCount(ctx context.Context, t *testing.T, w *world.World, ns, label, value string) int {
	t.Helper()
	var pods corev1.PodList
	if err := w.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{label: value}); err != nil {
		t.Fatal(err)
	}
	return len(pods.Items)
}
