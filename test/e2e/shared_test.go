package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/trace"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// metricValue reads one sample line's value from a controller's /metrics.
func metricValue(addr, sample string) (string, error) {
	body, err := metricsBody(addr)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("no %s in the metrics", sample)
}

// metricsBody is the Prometheus text the controller at addr serves.
func metricsBody(addr string) (string, error) {
	resp, err := http.Get("http://" + addr + "/metrics") //nolint:noctx // loopback
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// TestSharedTeleport proves registration in a Teleport shared by Kubernetes
// clusters and tenants, against the real Teleport: each cluster's controller
// identity (the shipped role, per cluster by the trait kube_cluster) gets
// AccessDenied on another cluster's db resource; a controller started with
// another cluster's --kube-cluster name but its own identity stops
// collecting and says so, deleting nothing; the label policy keeps a tenant
// from labelling its way into a Teleport role (a role that allows only
// env=dev does not see a Cluster that tried), the name policy keeps it from
// another namespace's names, an explicit name is used as written; and a db
// resource made before the identity label is adopted in place (no delete,
// no re-create).
func TestSharedTeleport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	w := world.Start(t, world.Options{})
	tp := startTeleport(t)
	for _, ns := range []string{"a", "b", "c"} {
		if err := w.Namespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.UserKubeconfig("cnpg-teleport"); err != nil {
		t.Fatal(err)
	}
	if err := w.ApplyClusterRole(ctx, filepath.Join(world.RepoRoot(), "config", "rbac", "role.yaml"), "cnpg-teleport"); err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(w.Dir, "cnpg-teleport.kubeconfig")
	ids := map[string]string{}
	for user, kube := range map[string]string{"ctl-a": "k1", "ctl-b": "k2", "ctl-c": "k2"} {
		id, err := tp.ControllerIdentity(ctx, user, time.Hour, kube)
		if err != nil {
			t.Fatal(err)
		}
		ids[user] = id
	}
	start := func(name, id string, port int, args ...string) {
		t.Helper()
		if _, err := w.StartControllerAs(name, kc, append([]string{"--teleport-addr=" + tp.AuthAddr, "--identity-file=" + id,
			"--resync-period=2s", fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", port),
			fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", port+1)}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	// Cluster A: its identity is the kube-system namespace UID (the default);
	// no label may come from an annotation (the default policy).
	start("controller-a", ids["ctl-a"], 18080, "--kube-cluster=k1", "--namespaces=a")
	// Cluster B: its own identity; tenants may label env=dev or env=staging.
	start("controller-b", ids["ctl-b"], 18090, "--kube-cluster=k2", "--kube-cluster-id=cluster-b", "--namespaces=b",
		"--annotation-labels=env=dev|staging")

	mk := func(ns, name string, ann map[string]string) {
		t.Helper()
		c := world.NewCluster(ns, name, 1)
		c.Annotations = map[string]string{dbspec.AnnotationRegister: "true"}
		for k, v := range ann {
			c.Annotations[k] = v
		}
		if err := w.Client.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	mk("a", "pg", map[string]string{dbspec.AnnotationName: "a-Shop"})     // as written, upper case kept
	mk("a", "dev", map[string]string{dbspec.AnnotationLabels: "env=dev"}) // against A's policy
	mk("a", "squat", map[string]string{dbspec.AnnotationName: "b-pg"})    // another namespace's name
	mk("b", "pg", map[string]string{dbspec.AnnotationLabels: "env=dev"})  // allowed by B's policy
	const mine, theirs = "a-Shop-rw", "k2-b-pg-rw"
	world.Eventually(t, 3*time.Minute, "both clusters' db resources registered", func() error {
		out, err := tp.Tctl(ctx, "", "get", "db", "--format=json")
		if err != nil {
			return err
		}
		for _, n := range []string{mine, theirs} {
			if !strings.Contains(string(out), `"`+n+`"`) {
				return fmt.Errorf("%s not registered yet", n)
			}
		}
		return nil
	})

	// The policies: refused with a reason naming the policy; nothing applied.
	events := func(ns, name string) string {
		var note string
		world.Eventually(t, time.Minute, "InvalidAnnotation on "+ns+"/"+name, func() error {
			var c cnpgv1.Cluster
			if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &c); err != nil {
				return err
			}
			if len(c.Finalizers) > 0 {
				t.Fatalf("%s/%s: a refused annotation must apply nothing, yet finalizers %v", ns, name, c.Finalizers)
			}
			b := &trustBed{t: t, ctx: ctx, w: w}
			note = b.event(ns, name, corev1.EventTypeWarning, controllers.ReasonInvalidAnnotation)
			return nil
		})
		return note
	}
	if note := events("a", "dev"); !strings.Contains(note, "--annotation-labels policy") {
		t.Fatalf("label policy: %s", note)
	}
	if note := events("a", "squat"); !strings.Contains(note, "name policy") {
		t.Fatalf("name policy: %s", note)
	}

	// A Teleport user whose role allows only env=dev sees B's db (its policy
	// allows the label) and not the Cluster of A that tried to label itself.
	dev, err := tp.UserFor(ctx, "dev", map[string]string{"env": "dev"}, []string{"teleport_read"}, []string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, 30*time.Second, "the dev user's databases", func() error {
		names, err := dev.DBNames(ctx)
		if err != nil {
			return err
		}
		if !slices.Equal(names, []string{theirs}) {
			return fmt.Errorf("tsh db ls: %v, want only %s", names, theirs)
		}
		return nil
	})
	world.Eventually(t, time.Minute, "the dev user reaches B's db", func() error {
		out, err := sql(ctx, dev, theirs, "teleport_read", "SELECT 'dev ok';")
		if err != nil || !strings.Contains(out, "dev ok") {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})
	if out, err := sql(ctx, dev, "k1-a-dev-rw", "teleport_read", "SELECT 1;"); err == nil {
		t.Fatalf("the dev user reached A's Cluster that labelled itself against the policy:\n%s", out)
	}

	// Cluster A's identity cannot touch B's db resource.
	ctlA, err := teleport.New(ctx, teleport.Config{Addrs: []string{tp.AuthAddr}, IdentityFile: ids["ctl-a"]})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ctlA.Close() }()
	seen, err := ctlA.ListDatabases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range seen {
		if db.GetName() == theirs {
			t.Fatal("cluster A's identity lists cluster B's db resource")
		}
	}
	if err := ctlA.DeleteDatabase(ctx, theirs); !trace.IsAccessDenied(err) {
		t.Fatalf("cluster A's identity deleting cluster B's db: want AccessDenied, got %v", err)
	}
	t.Logf("cluster A's identity on cluster B's db resource: %v", ctlA.DeleteDatabase(ctx, theirs))

	// A controller of another Kubernetes cluster under B's name: it stops
	// collecting (metric, log line) and deletes nothing of B's.
	start("controller-c", ids["ctl-c"], 18100, "--kube-cluster=k2", "--kube-cluster-id=impostor", "--namespaces=c")
	world.Eventually(t, time.Minute, "the impostor sees the conflict", func() error {
		v, err := metricValue("127.0.0.1:18100", "cnpg_teleport_kube_cluster_identity_conflicts")
		if err == nil && v != "1" {
			return fmt.Errorf("conflicts %s", v)
		}
		return err
	})
	if out, err := tp.Tctl(ctx, "", "get", "db/"+theirs, "--format=json"); err != nil {
		t.Fatalf("the impostor's collector deleted B's db resource: %v %s", err, out)
	}
	if !strings.Contains(w.Logs(), "two Kubernetes clusters share the name") {
		t.Fatal("no log line says why collection stopped")
	}

	// Upgrade: A's db resource as an older version made it (no identity
	// label) is adopted in place: the label comes back, no delete, no create.
	creates := tp.AuditCountBy(t, "ctl-a", "db.create")
	raw, err := tp.Tctl(ctx, "", "get", "db/"+mine, "--format=yaml")
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.Split(string(raw), "\n") {
		if !strings.Contains(l, dbspec.LabelKubeClusterID+":") {
			kept = append(kept, l)
		}
	}
	if _, err := tp.Tctl(ctx, strings.Join(kept, "\n"), "create", "-f", "--force"); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, 30*time.Second, "the legacy db resource adopted", func() error {
		out, err := tp.Tctl(ctx, "", "get", "db/"+mine, "--format=yaml")
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), dbspec.LabelKubeClusterID+":") {
			return fmt.Errorf("no identity label yet")
		}
		return nil
	})
	if d, c := tp.AuditCountBy(t, "ctl-a", "db.delete"), tp.AuditCountBy(t, "ctl-a", "db.create"); d != 0 || c != creates {
		t.Fatalf("adoption deleted %d and created %d db resources, want none", d, c-creates)
	}
}
