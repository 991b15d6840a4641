package e2e

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// trustBed is one world, one Teleport and the controller, for a Cluster the
// real CNPG runs with streaming replication.
type trustBed struct {
	t   *testing.T
	ctx context.Context
	w   *world.World
	tp  *world.Teleport
	id  string // the controller's identity file
}

// resync is the controller's --resync-period in these tests: the README's
// worst-case delay for a Teleport CA change to reach the bundle.
const trustResync = 2 * time.Second

// teleportCerts are the PEM certificates Teleport trusts for database clients now.
func (b *trustBed) teleportCerts(tc teleport.Client) []string {
	b.t.Helper()
	cas, err := tc.DatabaseClientCAs(b.ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	out := make([]string, 0, len(cas))
	for _, c := range cas {
		out = append(out, string(c))
	}
	return out
}

// waitBundle waits, at most the stated delay (one resync, CNPG's reload,
// margin for this loaded machine), until Teleport trusts keys keys, the
// bundle holds exactly CNPG's CA (and its carried predecessor) and those,
// and CNPG runs that version.
func (b *trustBed) waitBundle(tc teleport.Client, ns, name string, keys int) {
	b.t.Helper()
	world.Eventually(b.t, trustResync+5*time.Second, "the bundle follows Teleport's CA", func() error {
		want := b.teleportCerts(tc) // Teleport's reads trail its writes: read again each time
		if len(want) != keys {
			return fmt.Errorf("Teleport trusts %d keys, want %d", len(want), keys)
		}
		var s corev1.Secret
		if err := b.w.Client.Get(b.ctx, client.ObjectKey{Namespace: ns, Name: name + "-teleport-ca"}, &s); err != nil {
			return err
		}
		crt := string(s.Data["ca.crt"])
		carried := 0 // CNPG's previous CA, kept after its renewal until it expires
		if len(s.Data["previous-ca.crt"]) > 0 {
			carried = 1
		}
		if n := strings.Count(crt, "BEGIN CERTIFICATE"); n != len(want)+1+carried {
			return fmt.Errorf("bundle has %d certificates, want CNPG's + %d (+ %d carried)", n, len(want), carried)
		}
		for _, c := range want {
			if !strings.Contains(crt, strings.TrimSpace(c)) {
				return fmt.Errorf("bundle lacks a trusted Teleport key")
			}
		}
		var c cnpgv1.Cluster
		if err := b.w.Client.Get(b.ctx, client.ObjectKey{Namespace: ns, Name: name}, &c); err != nil {
			return err
		}
		if c.Status.SecretsResourceVersion.ClientCASecretVersion != s.ResourceVersion {
			return fmt.Errorf("CNPG runs version %s, the bundle is %s", c.Status.SecretsResourceVersion.ClientCASecretVersion, s.ResourceVersion)
		}
		return nil
	})
}

func newTrustBed(t *testing.T, ctx context.Context, ns string, opts ...world.Options) *trustBed {
	t.Helper()
	w := world.Start(t, append(opts, world.Options{})[0])
	tp := startTeleport(t)
	id := startController(t, ctx, w, tp, ns, "--resync-period="+trustResync.String())
	return &trustBed{t: t, ctx: ctx, w: w, tp: tp, id: id}
}

// startController starts the controller binary in namespace ns (made here)
// as Kubernetes user cnpg-teleport with config/rbac's ClusterRole and a
// least-privilege Teleport identity for kube cluster k1, metrics on
// 127.0.0.1:18080, and args; it returns the identity file.
func startController(t *testing.T, ctx context.Context, w *world.World, tp *world.Teleport, ns string, args ...string) string {
	t.Helper()
	if err := w.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	id, err := tp.ControllerIdentity(ctx, "cnpg-teleport", time.Hour, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.UserKubeconfig("cnpg-teleport"); err != nil {
		t.Fatal(err)
	}
	if err := w.ApplyClusterRole(ctx, filepath.Join(world.RepoRoot(), "config", "rbac", "role.yaml"), "cnpg-teleport"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.StartControllerAs("controller", filepath.Join(w.Dir, "cnpg-teleport.kubeconfig"), append([]string{
		"--teleport-addr=" + tp.AuthAddr, "--identity-file=" + id, "--kube-cluster=k1", "--namespaces=" + ns,
		"--metrics-bind-address=127.0.0.1:18080", "--health-probe-bind-address=127.0.0.1:18081"}, args...)...); err != nil {
		t.Fatal(err)
	}
	return id
}

// event waits for an Event with reason on the Cluster and returns its note.
func (b *trustBed) event(ns, name, eventType, reason string) string {
	b.t.Helper()
	var note string
	world.Eventually(b.t, 30*time.Second, "event "+reason, func() error {
		var list eventsv1.EventList
		if err := b.w.Client.List(b.ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Reason == reason && e.Type == eventType {
				note = e.Note
				return nil
			}
			if e.Regarding.Name == name && e.Type == corev1.EventTypeWarning {
				seen = append(seen, e.Reason+": "+e.Note)
			}
		}
		return fmt.Errorf("no %s/%s event yet (seen %v)", eventType, reason, seen)
	})
	return note
}

// where asks through db which server answers, whether it is a replica, and as whom.
func where(ctx context.Context, u *world.TshUser, db, dbUser string) (string, error) {
	out, err := u.Query(ctx, db, dbUser, "app",
		"SELECT 'addr=' || host(inet_server_addr()) || ' recovery=' || pg_is_in_recovery() || ' user=' || current_user;")
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	i := strings.Index(out, "addr=")
	if i < 0 {
		return "", fmt.Errorf("unexpected output: %s", out)
	}
	f := strings.Fields(out[i:])
	return f[0] + " " + f[1] + " " + f[2], nil
}

// expect waits until `tsh db connect` through db as dbUser lands on instance.
func (b *trustBed) expect(u *world.TshUser, ns, db, dbUser, instance, recovery string) {
	b.t.Helper()
	var pod corev1.Pod
	if err := b.w.Client.Get(b.ctx, client.ObjectKey{Namespace: ns, Name: instance}, &pod); err != nil {
		b.t.Fatal(err)
	}
	want := "addr=" + pod.Status.PodIP + " recovery=" + recovery + " user=" + dbUser
	world.Eventually(b.t, time.Minute, "tsh db connect "+db+" as "+dbUser+" reaches "+instance, func() error {
		got, err := where(b.ctx, u, db, dbUser)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	})
	b.t.Logf("%s as %s: %s (%s)", db, dbUser, want, instance)
}

// insert writes x into table t through db as dbUser, or fails the test.
func (b *trustBed) insert(u *world.TshUser, db, dbUser string, x int) {
	b.t.Helper()
	out, err := sql(b.ctx, u, db, dbUser, fmt.Sprintf("INSERT INTO t VALUES (%d);", x))
	if err != nil || !strings.Contains(out, "INSERT 0 1") {
		b.t.Fatalf("%s INSERT through %s: %v\n%s", dbUser, db, err, out)
	}
}

// waitSum waits until sum(x) of table t read through db (a replica) is want:
// the rows written on the primary have streamed there.
func (b *trustBed) waitSum(u *world.TshUser, db string, want int) {
	b.t.Helper()
	world.Eventually(b.t, 30*time.Second, "the rows reach "+db, func() error {
		out, err := sql(b.ctx, u, db, "teleport_read", "SELECT 'sum=' || sum(x) FROM t;")
		if err != nil || !strings.Contains(out, fmt.Sprintf("sum=%d", want)) {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})
}

// sql runs one statement through db as dbUser (database app) and returns psql's output.
func sql(ctx context.Context, u *world.TshUser, db, dbUser, stmt string) (string, error) {
	out, err := u.Query(ctx, db, dbUser, "app", stmt)
	return out, err
}

// TestTrust proves the trust half on a running 2-instance Cluster the real
// CNPG runs: annotating it makes PostgreSQL trust Teleport's database-client
// CA (CNPG's own automation and replication keep working, no restart), the
// read and write roles do what they say through the db resources the
// controller registered, rw follows a switchover, an unknown CA and a
// Teleport user without the role are refused, a user pg_hba line cannot
// shadow ours, and removing the annotation restores the user's slice of the
// Cluster exactly.
func TestTrust(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const ns, name = "trust", "pg"
	b := newTrustBed(t, ctx, ns)
	w := b.w

	// A running Cluster, with a user pg_hba line that would shadow a rule
	// placed after it.
	c := world.NewCluster(ns, name, 2)
	c.Spec.PostgresConfiguration.PgHBA = []string{"hostssl all teleport_read,teleport_write all reject"}
	t0 := time.Now()
	if err := w.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitClusterHealthy(ctx, ns, name, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("2-instance Cluster healthy in %s", time.Since(t0).Round(100*time.Millisecond))
	app := secret(ctx, t, w, ns, name+"-app")
	serverCA := secret(ctx, t, w, ns, name+"-ca")
	conn, err := world.ConnectPassword(ctx, name+"-rw."+ns+".svc", "app", string(app.Data["password"]), "app", serverCA.Data["ca.crt"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	before := clusterSlice(t, ctx, w, ns, name)
	uids := podUIDs(t, ctx, w, ns, name)

	// Annotate it.
	t0 = time.Now()
	if err := w.UpdateCluster(ctx, ns, name, func(c *cnpgv1.Cluster) {
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[dbspec.AnnotationRegister] = "true"
	}); err != nil {
		t.Fatal(err)
	}
	p := "k1-" + ns + "-" + name + "-"
	world.Eventually(t, 2*time.Minute, "registered once trusted", func() error {
		names, err := b.tp.Tctl(ctx, "", "get", "db", "--format=json")
		if err != nil {
			return err
		}
		if !strings.Contains(string(names), p+"rw") || !strings.Contains(string(names), p+"ro") {
			return fmt.Errorf("not registered yet")
		}
		return nil
	})
	t.Logf("annotated -> trusted and registered in %s", time.Since(t0).Round(100*time.Millisecond))
	var got cnpgv1.Cluster
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Certificates.ClientCASecret != name+"-teleport-ca" || got.Spec.PostgresConfiguration.PgHBA[0] != "hostssl all teleport_read,teleport_write all cert # cnpg-teleport" {
		t.Fatalf("status client CA %q, pg_hba %q", got.Status.Certificates.ClientCASecret, got.Spec.PostgresConfiguration.PgHBA)
	}
	bundle := secret(ctx, t, w, ns, name+"-teleport-ca")
	if bundle.Labels["cnpg.io/reload"] != "true" || string(bundle.Data["ca.key"]) != string(serverCA.Data["ca.key"]) ||
		!strings.HasPrefix(string(bundle.Data["ca.crt"]), strings.TrimSpace(string(serverCA.Data["ca.crt"]))) {
		t.Fatalf("bundle: labels %v, ca.crt does not start with CNPG's CA or ca.key differs", bundle.Labels)
	}
	if _, err := w.WaitClusterHealthy(ctx, ns, name, time.Minute); err != nil {
		t.Fatal(err)
	}
	if after := podUIDs(t, ctx, w, ns, name); after != uids {
		t.Fatalf("instances restarted: %s -> %s", uids, after)
	}

	// The roles through the registered db resources.
	alice, err := b.tp.User(ctx, "alice", []string{"teleport_read", "teleport_write"}, []string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	b.expect(alice, ns, p+"rw", "teleport_read", name+"-1", "false")
	if out, err := sql(ctx, alice, p+"rw", "teleport_read", "SELECT 'rows=' || count(*) FROM t;"); err != nil || !strings.Contains(out, "rows=0") {
		t.Fatalf("read role SELECT: %v\n%s", err, out)
	}
	// psql reads the statement from stdin: an SQL error is in its output, not its exit code.
	if out, _ := sql(ctx, alice, p+"rw", "teleport_read", "INSERT INTO t VALUES (1);"); !strings.Contains(out, "permission denied for table t") {
		t.Fatalf("read role INSERT must fail with permission denied:\n%s", out)
	}
	b.insert(alice, p+"rw", "teleport_write", 42)
	b.expect(alice, ns, p+"ro", "teleport_read", name+"-2", "true")
	// Replication still streams: the replica has the row written after the switch.
	b.waitSum(alice, p+"ro", 42)

	// (c) Refused: a client certificate of an unknown CA, and a Teleport user
	// whose role does not allow the read role.
	if _, err := w.CreateCA(ctx, ns, "unknown-ca"); err != nil {
		t.Fatal(err)
	}
	foreign, err := w.IssueCertificate(ctx, &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "foreign-read"},
		Spec: cmapi.CertificateSpec{SecretName: "foreign-read", CommonName: "teleport_read",
			Usages:    []cmapi.KeyUsage{cmapi.UsageClientAuth, cmapi.UsageDigitalSignature},
			IssuerRef: cmmeta.IssuerReference{Kind: cmapi.IssuerKind, Name: "unknown-ca"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := world.ConnectTLS(ctx, name+"-rw."+ns+".svc", "teleport_read", serverCA.Data["ca.crt"], foreign); err == nil {
		_ = c.Close(ctx)
		t.Fatal("a client certificate of an unknown CA logged in as teleport_read")
	} else {
		t.Logf("unknown CA refused: %v", err)
	}
	bob, err := b.tp.User(ctx, "bob", []string{"someone_else"}, []string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := sql(ctx, bob, p+"rw", "teleport_read", "SELECT 1;"); err == nil {
		t.Fatalf("bob may not use teleport_read, yet connected:\n%s", out)
	} else {
		t.Logf("bob refused: %s", strings.TrimSpace(out))
	}

	// The shipped user roles: cnpg-read reads and may not ask for the write role.
	shipped, err := os.ReadFile(filepath.Join(world.RepoRoot(), "config", "teleport", "user-roles.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.tp.Create(ctx, string(shipped)); err != nil {
		t.Fatal(err)
	}
	carol, err := b.tp.UserWithRoles(ctx, "carol", "cnpg-read")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := sql(ctx, carol, p+"rw", "teleport_read", "SELECT 'carol reads';"); err != nil || !strings.Contains(out, "carol reads") {
		t.Fatalf("cnpg-read as teleport_read: %v\n%s", err, out)
	}
	if out, err := sql(ctx, carol, p+"rw", "teleport_write", "SELECT 1;"); err == nil {
		t.Fatalf("cnpg-read may not use teleport_write, yet connected:\n%s", out)
	}

	// (g) The role check: a role that lets its holders in as any user is
	// reported, one allowing only our roles is not.
	for _, r := range []string{
		"kind: role\nversion: v6\nmetadata: {name: wide-db}\nspec:\n  allow:\n    db_labels: {cnpg-teleport.io/managed-by: cnpg-teleport}\n    db_users: ['*']\n    db_names: ['*']\n",
		"kind: role\nversion: v6\nmetadata: {name: narrow-db}\nspec:\n  allow:\n    db_labels: {cnpg-teleport.io/managed-by: cnpg-teleport}\n    db_users: [teleport_read]\n    db_names: ['*']\n",
	} {
		if err := b.tp.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	note := b.event(ns, name, corev1.EventTypeWarning, controllers.ReasonRiskyTeleportRole)
	if !strings.Contains(note, "wide-db (db_users *)") || strings.Contains(note, "narrow-db") || strings.Contains(note, "alice-db") || strings.Contains(note, "cnpg-read") || strings.Contains(note, "cnpg-write") {
		t.Fatalf("role warning: %s", note)
	}
	t.Logf("role warning: %s", note)
	// The shipped deny rule beside that wide role: the databases stay
	// reachable as the read role, CNPG's replication user does not.
	deny, err := os.ReadFile(filepath.Join(world.RepoRoot(), "config", "teleport", "deny-cnpg-system-users.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.tp.Create(ctx, string(deny)); err != nil {
		t.Fatal(err)
	}
	dave, err := b.tp.UserWithRoles(ctx, "dave", "wide-db", "deny-cnpg-system-users")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := sql(ctx, dave, p+"rw", "teleport_read", "SELECT 'dave reads';"); err != nil || !strings.Contains(out, "dave reads") {
		t.Fatalf("wide role + deny role as teleport_read: %v\n%s", err, out)
	}
	if out, err := sql(ctx, dave, p+"rw", "streaming_replica", "SELECT 1;"); err == nil || !strings.Contains(out, "access to db denied") {
		t.Fatalf("the deny role must keep streaming_replica out: %v\n%s", err, out)
	}
	world.Eventually(t, 10*time.Second, "the risky-role metric", func() error {
		resp, err := http.Get("http://127.0.0.1:18080/metrics") //nolint:noctx // loopback
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if want := `cnpg_teleport_risky_teleport_roles{cluster="pg",namespace="trust"} 1`; !strings.Contains(string(body), want) {
			return fmt.Errorf("metrics lack %s", want)
		}
		return nil
	})

	// Switchover: rw follows the new primary.
	switchover(t, ctx, w, ns, name, name+"-2")
	b.expect(alice, ns, p+"rw", "teleport_write", name+"-2", "false")
	b.expect(alice, ns, p+"ro", "teleport_read", name+"-1", "true")

	// CNPG-style renewal of <cluster>-ca (same key, new certificate): the
	// bundle follows with the renewed certificate first, keeps the previous
	// one, and Teleport users still get in.
	ownCA := secret(ctx, t, w, ns, name+"-ca")
	renewedCA := renewSameKey(t, ownCA.Data["ca.crt"], ownCA.Data["ca.key"])
	ownCA.Data["ca.crt"] = renewedCA
	if err := w.Client.Update(ctx, ownCA); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, trustResync+5*time.Second, "the bundle follows the renewed own CA", func() error {
		crt := string(secret(ctx, t, w, ns, name+"-teleport-ca").Data["ca.crt"])
		if !strings.HasPrefix(crt, string(renewedCA)) || !strings.Contains(crt, strings.TrimSpace(string(serverCA.Data["ca.crt"]))) {
			cur := string(secret(ctx, t, w, ns, name+"-ca").Data["ca.crt"])
			return fmt.Errorf("bundle does not start with the renewed CA and keep the previous one: starts renewed %v, has old %v, <c>-ca is renewed %v, %d certs",
				strings.HasPrefix(crt, string(renewedCA)), strings.Contains(crt, strings.TrimSpace(string(serverCA.Data["ca.crt"]))), cur == string(renewedCA), strings.Count(crt, "BEGIN"))
		}
		return nil
	})
	if out, err := sql(ctx, alice, p+"rw", "teleport_read", "SELECT 'renewed ok';"); err != nil || !strings.Contains(out, "renewed ok") {
		t.Fatalf("after the own CA's renewal: %v\n%s", err, out)
	}

	// (d) A db CA rotation, and a rollback: at every phase a Teleport user gets in.
	tc, err := teleport.New(ctx, teleport.Config{Addrs: []string{b.tp.AuthAddr}, IdentityFile: b.id})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tc.Close() }()
	initial := b.teleportCerts(tc)
	for _, phase := range []string{"init", "update_clients", "update_servers", "standby", "init", "update_clients", "rollback", "standby"} {
		if _, err := b.tp.Tctl(ctx, "", "auth", "rotate", "--manual", "--type=db", "--phase="+phase); err != nil {
			t.Fatal(err)
		}
		keys := 2 // from init to standby, old and new key
		if phase == "standby" {
			keys = 1
		}
		b.waitBundle(tc, ns, name, keys)
		out, err := sql(ctx, alice, p+"rw", "teleport_read", "SELECT 'phase ok';")
		if err != nil || !strings.Contains(out, "phase ok") {
			t.Fatalf("tsh db connect at rotation phase %s: %v\n%s", phase, err, out)
		}
		t.Logf("rotation phase %s: bundle follows (%d Teleport keys), tsh db connect works", phase, keys)
	}
	if final := b.teleportCerts(tc); final[0] == initial[0] {
		t.Fatal("the rotation did not change the db CA")
	}
	if strings.Contains(string(secret(ctx, t, w, ns, name+"-teleport-ca").Data["ca.crt"]), strings.TrimSpace(initial[0])) {
		t.Fatal("after the rotation the old key is still in the bundle")
	}

	// (f) Opt out: the user's slice comes back exactly; ours is gone.
	if err := w.UpdateCluster(ctx, ns, name, func(c *cnpgv1.Cluster) { delete(c.Annotations, dbspec.AnnotationRegister) }); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, time.Minute, "restored", func() error {
		if now := clusterSlice(t, ctx, w, ns, name); now != before {
			return fmt.Errorf("slice %s, want %s", now, before)
		}
		err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name + "-teleport-ca"}, &corev1.Secret{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("bundle still there (%w)", err)
		}
		var roles cnpgv1.DatabaseRoleList
		if err := w.Client.List(ctx, &roles, client.InNamespace(ns)); err != nil || len(roles.Items) > 0 {
			return fmt.Errorf("%d DatabaseRoles left (%w)", len(roles.Items), err)
		}
		return nil
	})
	if _, err := w.WaitClusterHealthy(ctx, ns, name, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	world.Eventually(t, time.Minute, "CNPG back on its own client CA", func() error {
		var c cnpgv1.Cluster
		if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &c); err != nil {
			return err
		}
		if c.Status.Certificates.ClientCASecret != name+"-ca" {
			return fmt.Errorf("status client CA %q", c.Status.Certificates.ClientCASecret)
		}
		return nil
	})
}

// renewSameKey re-issues a self-signed CA certificate with the same key and
// subject and a new validity, as CNPG renews <cluster>-ca.
func renewSameKey(t *testing.T, crtPEM, keyPEM []byte) []byte {
	t.Helper()
	cb, _ := pem.Decode(crtPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		t.Fatal("CNPG's CA Secret is not PEM")
	}
	old, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := *old
	tmpl.SerialNumber = new(big.Int).Add(old.SerialNumber, big.NewInt(1))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(90*24*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// clusterSlice is the JSON of what the controller may change in a Cluster:
// spec.certificates, spec.postgresql.pg_hba and pg_ident, and the annotations.
func clusterSlice(t *testing.T, ctx context.Context, w *world.World, ns, name string) string {
	t.Helper()
	var c cnpgv1.Cluster
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &c); err != nil {
		t.Fatal(err)
	}
	return sliceJSON(t, c.Annotations, c.Spec.Certificates, c.Spec.PostgresConfiguration.PgHBA, c.Spec.PostgresConfiguration.PgIdent)
}

// sliceJSON is the JSON of parts then the cnpg-teleport.io/ annotations.
func sliceJSON(t *testing.T, annotations map[string]string, parts ...any) string {
	t.Helper()
	ann := map[string]string{}
	for k, v := range annotations {
		if strings.HasPrefix(k, "cnpg-teleport.io/") {
			ann[k] = v
		}
	}
	b, err := json.Marshal(append(parts, ann))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func podUIDs(t *testing.T, ctx context.Context, w *world.World, ns, cluster string) string {
	t.Helper()
	var pods corev1.PodList
	if err := w.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance"}); err != nil {
		t.Fatal(err)
	}
	var uids []string
	for _, p := range pods.Items {
		uids = append(uids, p.Name+"="+string(p.UID))
	}
	return strings.Join(uids, ",")
}

// switchover asks CNPG to promote target, as `kubectl cnpg promote` does,
// and waits until the Cluster is healthy with target as primary.
func switchover(t *testing.T, ctx context.Context, w *world.World, ns, name, target string) {
	t.Helper()
	var cur cnpgv1.Cluster
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cur); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(cur.DeepCopy())
	cur.Status.TargetPrimary = target
	cur.Status.Phase = cnpgv1.PhaseSwitchover
	cur.Status.PhaseReason = "Switching over to " + target
	if err := w.Client.Status().Patch(ctx, &cur, patch); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	world.Eventually(t, 3*time.Minute, "switchover to "+target, func() error {
		got, err := w.WaitClusterHealthy(ctx, ns, name, time.Second)
		if err != nil {
			return err
		}
		if got.Status.CurrentPrimary != target {
			return fmt.Errorf("current primary %s", got.Status.CurrentPrimary)
		}
		return nil
	})
	t.Logf("switchover -> healthy in %s", time.Since(t0).Round(100*time.Millisecond))
}
