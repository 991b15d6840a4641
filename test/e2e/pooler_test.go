package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// benchSeconds is how long each pgbench run through a Pooler lasts: 5 s in
// make test, CNPG_TELEPORT_PGBENCH_SECONDS=30 for the seed's full run.
func benchSeconds() int {
	if n, err := strconv.Atoi(os.Getenv("CNPG_TELEPORT_PGBENCH_SECONDS")); err == nil && n > 0 {
		return n
	}
	return 5
}

func newPooler(ns, cluster, name string, annotations map[string]string) *cnpgv1.Pooler {
	return &cnpgv1.Pooler{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec: cnpgv1.PoolerSpec{
			Cluster: cnpgv1.LocalObjectReference{Name: cluster}, Type: cnpgv1.PoolerTypeRW, Instances: ptr(int32(1)),
			PgBouncer: &cnpgv1.PgBouncerSpec{PoolMode: cnpgv1.PgBouncerPoolModeSession},
		},
	}
}

// poolerSlice is the JSON of what the controller may change in a Pooler:
// its spec and its cnpg-teleport.io/ annotations.
func poolerSlice(t *testing.T, ctx context.Context, w *world.World, ns, name string) string {
	t.Helper()
	var p cnpgv1.Pooler
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
		t.Fatal(err)
	}
	return sliceJSON(t, p.Annotations, p.Spec)
}

// appQuery logs in through host as app (password, verify-full against rootCA)
// and returns current_user and the address PostgreSQL sees the client at.
func appQuery(ctx context.Context, w *world.World, host string, app *corev1.Secret, rootCA []byte) (string, error) {
	conn, err := world.ConnectPassword(ctx, host, "app", string(app.Data["password"]), "app", rootCA)
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close(ctx) }()
	var s string
	err = conn.QueryRow(ctx, "SELECT current_user || ' from ' || host(inet_client_addr())").Scan(&s)
	return s, err
}

// poolerIP is the Pod IP of a Pooler's (single) PgBouncer.
func poolerIP(t *testing.T, ctx context.Context, w *world.World, ns, name string) string {
	t.Helper()
	var pods corev1.PodList
	if err := w.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"cnpg.io/poolerName": name}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp.IsZero() && p.Status.PodIP != "" {
			return p.Status.PodIP
		}
	}
	t.Fatalf("no running PgBouncer Pod for %s", name)
	return ""
}

// bench runs pgbench through host: initialise, then a short run with two
// clients, which must complete with no failed transaction.
func bench(t *testing.T, ctx context.Context, w *world.World, host string, app *corev1.Secret, rootCA []byte, seconds int) {
	t.Helper()
	pw := string(app.Data["password"])
	if _, err := world.PgBench(ctx, w.Dir, host, "app", pw, "app", rootCA, "-i", "-s", "1", "-q"); err != nil {
		t.Fatal(err)
	}
	res, err := world.PgBench(ctx, w.Dir, host, "app", pw, "app", rootCA, "-c", "2", "-j", "2", "-T", fmt.Sprint(seconds))
	if err != nil {
		t.Fatal(err)
	}
	if res.Processed == 0 || res.Failed != 0 || !strings.Contains(res.Output, "number of failed transactions: 0") {
		t.Fatalf("pgbench through %s: %d processed, %d failed\n%s", host, res.Processed, res.Failed, res.Output)
	}
	t.Logf("pgbench -c 2 -j 2 -T %d through %s: %d transactions, 0 failed", seconds, host, res.Processed)
}

// TestPoolers proves Poolers under the Teleport-trusting client CA (default
// mode) with the real CNPG and PgBouncer: a Pooler made before the
// annotation and one made after both serve verify-full and pgbench; the
// Cluster's server certificate names the new one; PgBouncer trusts exactly
// the bundle (an unknown CA is refused, the Cluster's own accepted); a
// registered Pooler is reached through Teleport as the read and write roles,
// through PgBouncer, and across a Teleport CA rotation (which reaches
// PgBouncer only because the controller makes it reload); and opting out
// leaves the Cluster and the Poolers as the user had them, still working.
func TestPoolers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const ns, name = "poolers", "pg"
	const early, late = name + "-pooler-rw", name + "-pooler-late"
	b := newTrustBed(t, ctx, ns)
	w := b.w

	// A Cluster whose user already put the first Pooler's name in the server certificate.
	c := world.NewCluster(ns, name, 1)
	c.Spec.Certificates = &cnpgv1.CertificatesConfiguration{ServerAltDNSNames: []string{early + "." + ns + ".svc"}}
	if err := w.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitClusterHealthy(ctx, ns, name, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := w.Client.Create(ctx, newPooler(ns, name, early, nil)); err != nil {
		t.Fatal(err)
	}
	app := secret(ctx, t, w, ns, name+"-app")
	serverCA := secret(ctx, t, w, ns, name+"-ca")
	earlyHost, lateHost := early+"."+ns+".svc", late+"."+ns+".svc"
	world.Eventually(t, 2*time.Minute, "the early Pooler serves", func() error {
		_, err := appQuery(ctx, w, earlyHost, app, serverCA.Data["ca.crt"])
		return err
	})
	beforeCluster, beforePooler := clusterSlice(t, ctx, w, ns, name), poolerSlice(t, ctx, w, ns, early)

	// A Pooler alone cannot opt a Cluster in: it is told so, nothing is registered.
	asks := newPooler(ns, name, name+"-pooler-asks", map[string]string{dbspec.AnnotationRegister: "true"})
	asks.Spec.Instances = ptr(int32(0))
	if err := w.Client.Create(ctx, asks); err != nil {
		t.Fatal(err)
	}
	t.Logf("a Pooler asking alone: %s", b.event(ns, asks.Name, corev1.EventTypeWarning, controllers.ReasonPoolerNotRegistered))
	if err := w.Client.Delete(ctx, asks); err != nil {
		t.Fatal(err)
	}
	if out, err := b.tp.Tctl(ctx, "", "get", "db", "--format=json"); err != nil || strings.Contains(string(out), "pooler-asks") {
		t.Fatalf("registered without its Cluster: %v %s", err, out)
	}

	// Annotate the Cluster, then make a second Pooler that asks to be registered.
	t0 := time.Now()
	if err := w.UpdateCluster(ctx, ns, name, func(c *cnpgv1.Cluster) {
		c.Annotations = map[string]string{dbspec.AnnotationRegister: "true"}
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.Client.Create(ctx, newPooler(ns, name, late, map[string]string{dbspec.AnnotationRegister: "true"})); err != nil {
		t.Fatal(err)
	}
	p := "k1-" + ns + "-" + name + "-"
	world.Eventually(t, 2*time.Minute, "rw and the late Pooler registered", func() error {
		out, err := b.tp.Tctl(ctx, "", "get", "db", "--format=json")
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), `"`+p+"rw"+`"`) || !strings.Contains(string(out), `"`+p+"pooler-late"+`"`) {
			return fmt.Errorf("not registered yet")
		}
		if strings.Contains(string(out), `"`+p+"pooler-rw"+`"`) {
			t.Fatal("the early Pooler did not ask to be registered, yet it is")
		}
		return nil
	})
	t.Logf("annotated + late Pooler -> registered in %s", time.Since(t0).Round(100*time.Millisecond))

	// Both Poolers: verify-full through PgBouncer (the late one's name is now
	// in CNPG's server certificate), and pgbench with no failed transaction.
	for _, pooler := range []string{early, late} {
		host := pooler + "." + ns + ".svc"
		world.Eventually(t, 90*time.Second, "verify-full through "+host, func() error {
			s, err := appQuery(ctx, w, host, app, serverCA.Data["ca.crt"])
			if err == nil && s != "app from "+poolerIP(t, ctx, w, ns, pooler) {
				return fmt.Errorf("not through PgBouncer: %q", s)
			}
			return err
		})
		bench(t, ctx, w, host, app, serverCA.Data["ca.crt"], benchSeconds())
	}
	if _, err := w.WaitClusterHealthy(ctx, ns, name, time.Minute); err != nil {
		t.Fatal(err)
	}

	// PgBouncer's client CA is the bundle: a certificate of an unknown CA is
	// refused in the TLS handshake, one of the Cluster's own CA accepted.
	unknown, err := w.CreateCA(ctx, ns, "unknown-ca")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ca     *corev1.Secret
		accept bool
	}{{unknown, false}, {serverCA, true}} {
		key := tc.ca.Data["ca.key"]
		if key == nil {
			key = tc.ca.Data["tls.key"]
		}
		crt := tc.ca.Data["ca.crt"]
		if tc.ca == unknown {
			crt = tc.ca.Data["tls.crt"]
		}
		cert, err := world.SignClient(crt, key, "app")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := world.Connect(ctx, lateHost, "app", string(app.Data["password"]), "app", serverCA.Data["ca.crt"], cert)
		if err == nil {
			_ = conn.Close(ctx)
		}
		if tc.accept && err != nil {
			t.Fatalf("a client certificate of the Cluster's own CA at PgBouncer: %v", err)
		}
		// TLS 1.3: the refusal is an "unknown certificate authority" alert or,
		// when it races the client's first write, a reset; the same login
		// with the Cluster's own CA succeeds, so the certificate is the cause.
		if !tc.accept && err == nil {
			t.Fatal("a client certificate of an unknown CA at PgBouncer: want a TLS refusal")
		}
		if !tc.accept {
			t.Logf("unknown CA refused at PgBouncer: %v", err)
		}
	}

	// Nor does a self-made certificate for a Teleport role (PgBouncer's cert rule).
	forged, err := world.SignClient(unknown.Data["tls.crt"], unknown.Data["tls.key"], "teleport_write")
	if err != nil {
		t.Fatal(err)
	}
	if conn, err := world.Connect(ctx, lateHost, "teleport_write", "", "app", serverCA.Data["ca.crt"], forged); err == nil {
		_ = conn.Close(ctx)
		t.Fatal("a certificate of an unknown CA logged in as teleport_write through PgBouncer")
	}

	// Through Teleport: the late Pooler's db resource, as each role, through PgBouncer.
	alice, err := b.tp.User(ctx, "alice", []string{"teleport_read", "teleport_write"}, []string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	viaPooler := p + "pooler-late"
	lateIP := poolerIP(t, ctx, w, ns, late)
	world.Eventually(t, time.Minute, "tsh db connect through the Pooler", func() error {
		out, err := sql(ctx, alice, viaPooler, "teleport_read", "SELECT 'who=' || current_user || '@' || host(inet_client_addr());")
		if err != nil || !strings.Contains(out, "who=teleport_read@") {
			return fmt.Errorf("%w: %s", err, out)
		}
		if !strings.Contains(out, "who=teleport_read@"+poolerIP(t, ctx, w, ns, late)) {
			t.Fatalf("not through PgBouncer (%s):\n%s", lateIP, out)
		}
		return nil
	})
	if out, _ := sql(ctx, alice, viaPooler, "teleport_read", "CREATE TABLE t (x int);"); !strings.Contains(out, "permission denied") {
		t.Fatalf("read role CREATE through the Pooler must be refused:\n%s", out)
	}
	if out, err := sql(ctx, alice, viaPooler, "teleport_write", "INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 42);"); err != nil || !strings.Contains(out, "INSERT 0 1") {
		t.Fatalf("write role INSERT through the Pooler: %v\n%s", err, out)
	}
	bob, err := b.tp.User(ctx, "bob", []string{"someone_else"}, []string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := sql(ctx, bob, viaPooler, "teleport_read", "SELECT 1;"); err == nil {
		t.Fatalf("bob may not use teleport_read, yet connected through the Pooler:\n%s", out)
	}
	// The roles have no password: PgBouncer's md5 fallback never lets them in.
	if conn, err := world.ConnectPassword(ctx, lateHost, "teleport_write", "", "app", serverCA.Data["ca.crt"]); err == nil {
		_ = conn.Close(ctx)
		t.Fatal("teleport_write logged in through PgBouncer without a certificate")
	}

	// A db CA rotation reaches PgBouncer: after update_clients Teleport signs
	// with the new key, which only a reloaded PgBouncer trusts.
	tc, err := teleport.New(ctx, teleport.Config{Addrs: []string{b.tp.AuthAddr}, IdentityFile: b.id})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tc.Close() }()
	for _, phase := range []string{"init", "update_clients", "update_servers", "standby"} {
		if _, err := b.tp.Tctl(ctx, "", "auth", "rotate", "--manual", "--type=db", "--phase="+phase); err != nil {
			t.Fatal(err)
		}
		keys := 2
		if phase == "standby" {
			keys = 1
		}
		b.waitBundle(tc, ns, name, keys)
		world.Eventually(t, 20*time.Second, "through the Pooler at rotation phase "+phase, func() error {
			out, err := sql(ctx, alice, viaPooler, "teleport_read", "SELECT 'phase ok';")
			if err != nil || !strings.Contains(out, "phase ok") {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		})
		t.Logf("rotation phase %s: tsh db connect through the Pooler works", phase)
	}
	b.event(ns, late, corev1.EventTypeNormal, controllers.ReasonPoolerConfigured)

	// CNPG-style renewal of <cluster>-ca (same key, new certificate): both
	// paths through the Poolers keep working.
	ownCA := secret(ctx, t, w, ns, name+"-ca")
	renewed := renewSameKey(t, ownCA.Data["ca.crt"], ownCA.Data["ca.key"])
	ownCA.Data["ca.crt"] = renewed
	if err := w.Client.Update(ctx, ownCA); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, trustResync+5*time.Second, "the bundle follows the renewed own CA", func() error {
		if !strings.HasPrefix(string(secret(ctx, t, w, ns, name+"-teleport-ca").Data["ca.crt"]), string(renewed)) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	world.Eventually(t, 20*time.Second, "both Pooler paths after the renewal", func() error {
		if _, err := appQuery(ctx, w, lateHost, app, renewed); err != nil {
			return err
		}
		if out, err := sql(ctx, alice, viaPooler, "teleport_read", "SELECT 'renewed ok';"); err != nil || !strings.Contains(out, "renewed ok") {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})
	bench(t, ctx, w, lateHost, app, renewed, benchSeconds())

	// The early Pooler was only told to reload: its spec is the user's.
	if now := poolerSlice(t, ctx, w, ns, early); !strings.HasPrefix(now, beforePooler[:strings.LastIndex(beforePooler, "{")]) {
		t.Fatalf("the unregistered Pooler's spec changed:\n%s\n%s", now, beforePooler)
	}

	// The late Pooler goes: its db resource is deregistered, the map removed.
	if err := w.Client.Delete(ctx, &cnpgv1.Pooler{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: late}}); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, time.Minute, "the deleted Pooler deregistered", func() error {
		out, err := b.tp.Tctl(ctx, "", "get", "db", "--format=json")
		if err != nil {
			return err
		}
		if strings.Contains(string(out), `"`+viaPooler+`"`) {
			return fmt.Errorf("%s still registered", viaPooler)
		}
		var c cnpgv1.Cluster
		if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &c); err != nil {
			return err
		}
		if len(c.Spec.PostgresConfiguration.PgIdent) != 0 || strings.Contains(strings.Join(c.Spec.Certificates.ServerAltDNSNames, " "), late) {
			return fmt.Errorf("pg_ident %q, names %q", c.Spec.PostgresConfiguration.PgIdent, c.Spec.Certificates.ServerAltDNSNames)
		}
		return nil
	})

	// Opt out: the Cluster and the early Pooler are as the user left them, and work.
	if err := w.UpdateCluster(ctx, ns, name, func(c *cnpgv1.Cluster) { delete(c.Annotations, dbspec.AnnotationRegister) }); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, time.Minute, "restored", func() error {
		if now := clusterSlice(t, ctx, w, ns, name); now != beforeCluster {
			return fmt.Errorf("cluster slice %s, want %s", now, beforeCluster)
		}
		if now := poolerSlice(t, ctx, w, ns, early); now != beforePooler {
			return fmt.Errorf("pooler slice %s, want %s", now, beforePooler)
		}
		err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name + "-teleport-ca"}, &corev1.Secret{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("bundle still there (%w)", err)
		}
		return nil
	})
	if _, err := w.WaitClusterHealthy(ctx, ns, name, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	bench(t, ctx, w, earlyHost, app, serverCA.Data["ca.crt"], 3)
}
