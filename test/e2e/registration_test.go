package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// reg is the registration test bed: one world, one Teleport, the controller
// binary watching namespace "reg" as Kubernetes cluster "k1".
type reg struct {
	t        *testing.T
	ctx      context.Context
	w        *world.World
	tp       *world.Teleport
	admin    teleport.Client // the controller's identity, to observe what it sees
	auditLog string
	ctrl     *world.Process
}

const (
	regNS       = "reg"
	kubeCluster = "k1"
	resync      = 300 * time.Millisecond
)

func newReg(t *testing.T, ctx context.Context) *reg {
	t.Helper()
	dir := t.TempDir()
	opts, auditLog, err := world.AuditOptions(dir)
	if err != nil {
		t.Fatal(err)
	}
	w := world.Start(t, opts)
	tp := startTeleport(t)
	for _, ns := range []string{regNS, "other", "tbot"} {
		if err := w.Namespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	id, err := tp.ControllerIdentity(ctx, "cnpg-teleport", time.Hour, kubeCluster, "k2", "k3")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := teleport.New(ctx, teleport.Config{Addrs: []string{tp.AuthAddr}, IdentityFile: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	// The controller runs as its own user with only the shipped ClusterRole.
	if _, err := w.UserKubeconfig("cnpg-teleport"); err != nil {
		t.Fatal(err)
	}
	if err := w.ApplyClusterRole(ctx, filepath.Join(world.RepoRoot(), "config", "rbac", "role.yaml"), "cnpg-teleport"); err != nil {
		t.Fatal(err)
	}
	if id != filepath.Join(tp.Dir, "cnpg-teleport.identity") {
		t.Fatalf("identity at %s", id)
	}
	r := &reg{t: t, ctx: ctx, w: w, tp: tp, admin: tc, auditLog: auditLog}
	r.restartController()
	return r
}

// cluster creates an annotated Cluster, which the real CNPG runs with its own
// server CA <name>-ca (the default path).
func (r *reg) cluster(ns, name string, instances int, annotations map[string]string) *cnpgv1.Cluster {
	r.t.Helper()
	return r.create(world.NewCluster(ns, name, instances), annotations)
}

func (r *reg) create(c *cnpgv1.Cluster, annotations map[string]string) *cnpgv1.Cluster {
	r.t.Helper()
	c.Annotations = annotations
	if err := r.w.Client.Create(r.ctx, c); err != nil {
		r.t.Fatal(err)
	}
	return c
}

func register(extra ...string) map[string]string {
	a := map[string]string{dbspec.AnnotationRegister: "true"}
	for i := 0; i+1 < len(extra); i += 2 {
		a[extra[i]] = extra[i+1]
	}
	return a
}

// dbs returns the db resources named with prefix, as the admin tctl sees them.
func (r *reg) dbs(prefix string) map[string]types.Database {
	r.t.Helper()
	all, err := r.admin.ListDatabases(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	out := map[string]types.Database{}
	for _, m := range all { // the list has names and labels: each is read whole
		if !strings.HasPrefix(m.Name, prefix) {
			continue
		}
		db, err := r.admin.GetDatabase(r.ctx, m.Name)
		if trace.IsNotFound(err) {
			continue // deleted since the list
		}
		if err != nil {
			r.t.Fatal(err)
		}
		out[m.Name] = db
	}
	return out
}

// waitNames waits until exactly names exist with prefix.
func (r *reg) waitNames(prefix string, names ...string) map[string]types.Database {
	r.t.Helper()
	var got map[string]types.Database
	world.Eventually(r.t, 30*time.Second, fmt.Sprintf("db resources %s* = %v", prefix, names), func() error {
		got = r.dbs(prefix)
		have := make([]string, 0, len(got))
		for n := range got {
			have = append(have, n)
		}
		slices.Sort(have)
		want := slices.Sorted(slices.Values(names))
		if !slices.Equal(have, want) {
			return fmt.Errorf("have %v", have)
		}
		return nil
	})
	return got
}

// event waits for an Event with reason on the Cluster.
func (r *reg) event(c *cnpgv1.Cluster, eventType, reason string) *eventsv1.Event {
	r.t.Helper()
	var found *eventsv1.Event
	world.Eventually(r.t, time.Minute, "event "+reason+" on "+c.Name, func() error {
		var list eventsv1.EventList
		if err := r.w.Client.List(r.ctx, &list, client.InNamespace(c.Namespace)); err != nil {
			return err
		}
		for i, e := range list.Items {
			if e.Regarding.Name == c.Name && e.Reason == reason && e.Type == eventType {
				found = &list.Items[i]
				return nil
			}
		}
		return fmt.Errorf("no %s/%s event yet", eventType, reason)
	})
	return found
}

func (r *reg) waitGone(c *cnpgv1.Cluster) {
	r.t.Helper()
	world.Eventually(r.t, 30*time.Second, "cluster "+c.Name+" gone", func() error {
		err := r.w.Client.Get(r.ctx, client.ObjectKeyFromObject(c), &cnpgv1.Cluster{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %w", err)
	})
}

func (r *reg) waitFinalizer(c *cnpgv1.Cluster, want bool) {
	r.t.Helper()
	world.Eventually(r.t, 30*time.Second, fmt.Sprintf("finalizer on %s = %v", c.Name, want), func() error {
		var got cnpgv1.Cluster
		if err := r.w.Client.Get(r.ctx, client.ObjectKeyFromObject(c), &got); err != nil {
			return err
		}
		if slices.Contains(got.Finalizers, controllers.Finalizer) != want {
			return fmt.Errorf("finalizers %v", got.Finalizers)
		}
		return nil
	})
}

func (r *reg) patch(c *cnpgv1.Cluster, mutate func(*cnpgv1.Cluster)) {
	r.t.Helper()
	world.Eventually(r.t, 10*time.Second, "update "+c.Name, func() error {
		var cur cnpgv1.Cluster
		if err := r.w.Client.Get(r.ctx, client.ObjectKeyFromObject(c), &cur); err != nil {
			return err
		}
		mutate(&cur)
		return r.w.Client.Update(r.ctx, &cur)
	})
}

func prefix(ns, name string) string { return kubeCluster + "-" + ns + "-" + name + "-" }

// TestRegistration proves the core promise against the real apiserver and
// the real Teleport, with the controller binary as it ships.
func TestRegistration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	r := newReg(t, ctx)

	t.Run("rw, verify-full, CNPG's own server CA, labels; 1 -> 2 -> 1 instances", func(t *testing.T) {
		r.t = t
		c := r.cluster(regNS, "one", 1, register(dbspec.AnnotationLabels, "team=db"))
		p := prefix(regNS, "one")
		dbs := r.waitNames(p, p+"rw")
		var ca corev1.Secret
		if err := r.w.Client.Get(ctx, client.ObjectKey{Namespace: regNS, Name: "one-ca"}, &ca); err != nil {
			t.Fatal(err)
		}
		db := dbs[p+"rw"]
		if db.GetTLS().Mode != types.DatabaseTLSMode_VERIFY_FULL || db.GetTLS().CACert != string(ca.Data["ca.crt"]) {
			t.Fatalf("tls = %+v; want verify-full with CNPG's server CA one-ca", db.GetTLS())
		}
		if db.GetURI() != "one-rw.reg.svc.cluster.local:5432" || db.GetProtocol() != "postgres" {
			t.Fatalf("uri %s protocol %s", db.GetURI(), db.GetProtocol())
		}
		l := db.GetStaticLabels()
		for k, v := range map[string]string{"team": "db", "env": "test", "sql_type": "primary", dbspec.LabelManagedBy: "cnpg-teleport",
			dbspec.LabelKubeCluster: kubeCluster, dbspec.LabelClusterUID: string(c.UID)} {
			if l[k] != v {
				t.Errorf("label %s = %q, want %q (all: %v)", k, l[k], v, l)
			}
		}
		r.event(c, corev1.EventTypeNormal, controllers.ReasonRegistered)
		r.waitFinalizer(c, true)

		r.patch(c, func(c *cnpgv1.Cluster) { c.Spec.Instances = 2 })
		dbs = r.waitNames(p, p+"rw", p+"ro")
		if dbs[p+"ro"].GetStaticLabels()["sql_type"] != "standby" || dbs[p+"ro"].GetURI() != "one-ro.reg.svc.cluster.local:5432" {
			t.Fatalf("ro: %v %s", dbs[p+"ro"].GetStaticLabels(), dbs[p+"ro"].GetURI())
		}
		r.patch(c, func(c *cnpgv1.Cluster) { c.Spec.Instances = 1 })
		r.waitNames(p, p+"rw")
	})

	t.Run("user server CA (cert-manager) renewed -> ca_cert follows", func(t *testing.T) {
		r.t = t
		serverPKI(ctx, t, r.w, regNS, "rot")
		c := world.NewCluster(regNS, "rot", 1)
		c.Spec.Certificates = &cnpgv1.CertificatesConfiguration{ServerCASecret: "rot-server-ca", ServerTLSSecret: "rot-server"}
		r.create(c, register())
		p := prefix(regNS, "rot")
		r.waitNames(p, p+"rw")
		other, err := r.w.CreateCA(ctx, regNS, "rot-next-ca")
		if err != nil {
			t.Fatal(err)
		}
		var ca corev1.Secret
		if err := r.w.Client.Get(ctx, client.ObjectKey{Namespace: regNS, Name: "rot-server-ca"}, &ca); err != nil {
			t.Fatal(err)
		}
		// Stand-in for a CA renewal: the Secret's ca.crt changes.
		ca.Data["ca.crt"] = other.Data["ca.crt"]
		if err := r.w.Client.Update(ctx, &ca); err != nil {
			t.Fatal(err)
		}
		world.Eventually(t, 30*time.Second, "ca_cert follows", func() error {
			db := r.dbs(p)[p+"rw"]
			if db == nil || db.GetTLS().CACert != string(other.Data["ca.crt"]) {
				return fmt.Errorf("not yet")
			}
			return nil
		})
	})

	t.Run("annotations edited: name and labels follow, old name removed", func(t *testing.T) {
		r.t = t
		c := r.cluster(regNS, "ren", 1, register())
		p := prefix(regNS, "ren")
		r.waitNames(p, p+"rw")
		r.patch(c, func(c *cnpgv1.Cluster) {
			c.Annotations[dbspec.AnnotationName] = regNS + "-renamed"
			c.Annotations[dbspec.AnnotationLabels] = "tier=gold"
		})
		dbs := r.waitNames(regNS+"-renamed-", regNS+"-renamed-rw")
		r.waitNames(p)
		if dbs[regNS+"-renamed-rw"].GetStaticLabels()["tier"] != "gold" {
			t.Fatalf("labels %v", dbs[regNS+"-renamed-rw"].GetStaticLabels())
		}
	})

	t.Run("annotation removed -> deregistered, finalizer dropped", func(t *testing.T) {
		r.t = t
		c := r.cluster(regNS, "optout", 1, register())
		p := prefix(regNS, "optout")
		r.waitNames(p, p+"rw")
		r.waitFinalizer(c, true)
		r.patch(c, func(c *cnpgv1.Cluster) { delete(c.Annotations, dbspec.AnnotationRegister) })
		r.waitNames(p)
		r.waitFinalizer(c, false)
		r.event(c, corev1.EventTypeNormal, controllers.ReasonDeregistered)
	})

	t.Run("Cluster deleted -> deregistered, finalizer removed", func(t *testing.T) {
		r.t = t
		c := r.cluster(regNS, "del", 2, register())
		p := prefix(regNS, "del")
		r.waitNames(p, p+"rw", p+"ro")
		r.waitFinalizer(c, true)
		if err := r.w.Client.Delete(ctx, c); err != nil {
			t.Fatal(err)
		}
		r.waitNames(p)
		r.waitGone(c)
	})

	t.Run("keep honoured on delete, and by orphan collection", func(t *testing.T) {
		r.t = t
		c := r.cluster(regNS, "kept", 1, register(dbspec.AnnotationKeep, "true"))
		p := prefix(regNS, "kept")
		r.waitNames(p, p+"rw")
		r.waitFinalizer(c, true)
		if err := r.w.Client.Delete(ctx, c); err != nil {
			t.Fatal(err)
		}
		r.waitGone(c)
		r.waitPasses("127.0.0.1:18080", 3) // orphan collections that could have taken it
		r.waitNames(p, p+"rw")
		if err := r.admin.DeleteDatabase(ctx, p+"rw"); err != nil { // tidy up for later counts
			t.Fatal(err)
		}
	})

	t.Run("Teleport down during delete -> Warning, completes when it returns", func(t *testing.T) {
		r.t = t
		c := r.cluster(regNS, "outage", 1, register())
		p := prefix(regNS, "outage")
		r.waitNames(p, p+"rw")
		r.waitFinalizer(c, true)
		r.tp.Stop()
		if err := r.w.Client.Delete(ctx, c); err != nil {
			t.Fatal(err)
		}
		e := r.event(c, corev1.EventTypeWarning, controllers.ReasonTeleportUnavailable)
		t.Logf("event while Teleport is down: %s", e.Note)
		if err := r.w.Client.Get(ctx, client.ObjectKeyFromObject(c), &cnpgv1.Cluster{}); err != nil {
			t.Fatalf("the Cluster must wait for deregistration: %v", err)
		}
		if err := r.tp.Start(); err != nil {
			t.Fatal(err)
		}
		r.waitGone(c)
		r.waitNames(p)
	})

	t.Run("foreign db with the same name untouched: NameConflict", func(t *testing.T) {
		r.t = t
		p := prefix(regNS, "taken")
		foreign := fmt.Sprintf("kind: db\nversion: v3\nmetadata:\n  name: %srw\n  labels: {owner: someone-else}\nspec:\n  protocol: postgres\n  uri: elsewhere.example:5432\n", p)
		if err := r.tp.Create(ctx, foreign); err != nil {
			t.Fatal(err)
		}
		before, err := r.tp.Tctl(ctx, "", "get", "db/"+p+"rw", "--format=json")
		if err != nil {
			t.Fatal(err)
		}
		c := r.cluster(regNS, "taken", 1, register())
		r.event(c, corev1.EventTypeWarning, controllers.ReasonNameConflict)
		if err := r.w.Client.Delete(ctx, c); err != nil {
			t.Fatal(err)
		}
		r.waitGone(c)
		r.waitPasses("127.0.0.1:18080", 3)
		after, err := r.tp.Tctl(ctx, "", "get", "db/"+p+"rw", "--format=json")
		if err != nil {
			t.Fatalf("the foreign db was deleted: %v", err)
		}
		if string(before) != string(after) {
			t.Fatalf("the foreign db changed:\nbefore %s\nafter %s", before, after)
		}
	})

	t.Run("finalizer stripped by hand -> orphan collected", func(t *testing.T) {
		r.t = t
		c := r.cluster(regNS, "orphan", 1, register())
		p := prefix(regNS, "orphan")
		r.waitNames(p, p+"rw")
		r.waitFinalizer(c, true)
		// A person removes the finalizer while the controller is down, then deletes.
		r.ctrl.Stop()
		r.patch(c, func(c *cnpgv1.Cluster) { c.Finalizers = nil })
		if err := r.w.Client.Delete(ctx, c); err != nil {
			t.Fatal(err)
		}
		r.waitGone(c)
		r.restartController()
		r.waitNames(p)
	})

	t.Run("malformed annotations -> InvalidAnnotation, nothing applied", func(t *testing.T) {
		r.t = t
		c := r.cluster(regNS, "bad", 1, register(dbspec.AnnotationEndpoints, "rw,bogus", dbspec.AnnotationLabels, "novalue"))
		e := r.event(c, corev1.EventTypeWarning, controllers.ReasonInvalidAnnotation)
		if !strings.Contains(e.Note, dbspec.AnnotationEndpoints) || !strings.Contains(e.Note, dbspec.AnnotationLabels) {
			t.Fatalf("the event should name both annotations: %s", e.Note)
		}
		r.waitPasses("127.0.0.1:18080", 3)
		if got := r.dbs(prefix(regNS, "bad")); len(got) != 0 {
			t.Fatalf("applied despite invalid annotations: %v", got)
		}
		var got cnpgv1.Cluster
		if err := r.w.Client.Get(ctx, client.ObjectKeyFromObject(c), &got); err != nil || len(got.Finalizers) != 0 {
			t.Fatalf("not even a finalizer may be applied: %v %v", got.Finalizers, err)
		}
	})

	t.Run("second controller, another Kubernetes cluster name, same Teleport", func(t *testing.T) {
		r.t = t
		id, err := r.tp.SignIdentity(ctx, "cnpg-teleport", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		kc := filepath.Join(r.w.Dir, "cnpg-teleport.kubeconfig")
		if _, err := r.w.StartControllerAs("controller-k2", kc, "--teleport-addr="+r.tp.AuthAddr, "--identity-file="+id,
			"--kube-cluster=k2", "--namespaces=other", "--resync-period="+resync.String(),
			"--metrics-bind-address=127.0.0.1:18090", "--health-probe-bind-address=127.0.0.1:18091"); err != nil {
			t.Fatal(err)
		}
		mine := r.cluster(regNS, "same", 1, register())
		theirs := r.cluster("other", "same", 1, register())
		r.waitNames("k1-reg-same-", "k1-reg-same-rw")
		r.waitNames("k2-other-same-", "k2-other-same-rw")
		r.waitPasses("127.0.0.1:18080", 3) // both collectors ran several times
		r.waitPasses("127.0.0.1:18090", 3)
		r.waitNames("k1-reg-same-", "k1-reg-same-rw")
		if err := r.w.Client.Delete(ctx, theirs); err != nil {
			t.Fatal(err)
		}
		r.waitNames("k2-other-same-")
		r.waitPasses("127.0.0.1:18090", 3)
		r.waitNames("k1-reg-same-", "k1-reg-same-rw")
		_ = mine
	})

	t.Run("tbot directory: a renewed identity is used without a restart", func(t *testing.T) {
		r.t = t
		// Two users with the same least-privilege role: the audit log tells which identity wrote.
		if err := r.tp.ControllerUser(ctx, "renewed-bot", "k3"); err != nil {
			t.Fatal(err)
		}
		botDir := t.TempDir()
		first, err := os.ReadFile(filepath.Join(r.tp.Dir, "cnpg-teleport.identity"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(botDir, "identity"), first, 0o600); err != nil {
			t.Fatal(err)
		}
		kc := filepath.Join(r.w.Dir, "cnpg-teleport.kubeconfig")
		tbotCtl, err := r.w.StartControllerAs("controller-tbot", kc, "--teleport-addr="+r.tp.AuthAddr, "--tbot-dir="+botDir,
			"--identity-reload-interval=200ms", "--kube-cluster=k3", "--namespaces=tbot", "--resync-period="+resync.String(),
			"--metrics-bind-address=127.0.0.1:18095", "--health-probe-bind-address=127.0.0.1:18096")
		if err != nil {
			t.Fatal(err)
		}
		r.cluster("tbot", "before", 1, register())
		r.waitNames("k3-tbot-before-", "k3-tbot-before-rw")

		// tbot renews: the file is replaced (as tbot does, by rename).
		renewed, err := r.tp.SignIdentity(ctx, "renewed-bot", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(renewed, filepath.Join(botDir, "identity")); err != nil {
			t.Fatal(err)
		}
		world.Eventually(t, 10*time.Second, "the controller reloads the renewed identity", func() error {
			if !strings.Contains(tbotCtl.Tail(4096), "Reloaded the Teleport identity") {
				return fmt.Errorf("no reload logged yet")
			}
			return nil
		})
		// Connections made from now on use the new identity: force one.
		r.tp.Stop()
		if err := r.tp.Start(); err != nil {
			t.Fatal(err)
		}
		r.cluster("tbot", "after", 1, register())
		r.waitNames("k3-tbot-after-", "k3-tbot-after-rw")
		if n := r.tp.AuditCountBy(t, "renewed-bot", "db.create"); n != 1 {
			t.Fatalf("db.create by the renewed identity: %d, want 1", n)
		}
	})

	t.Run("100 resyncs -> 0 writes (Teleport audit log, apiserver audit log)", func(t *testing.T) {
		r.t = t
		c := r.cluster(regNS, "steady", 2, register())
		p := prefix(regNS, "steady")
		r.waitNames(p, p+"rw", p+"ro")
		r.waitPasses("127.0.0.1:18080", 2) // in-flight passes settled
		waitAgentsSettled(t, "127.0.0.1:18080", "127.0.0.1:18090", "127.0.0.1:18095")
		tpBefore := r.tp.AuditCount(t, "db.create", "db.update", "db.delete")
		kBefore, err := world.AuditWrites(r.auditLog, "cnpg-teleport")
		if err != nil {
			t.Fatal(err)
		}
		n0 := r.reconciles()
		world.Eventually(t, 3*time.Minute, "100 resyncs", func() error {
			if n := r.reconciles() - n0; n < 100 {
				return fmt.Errorf("%d reconciles", n)
			}
			return nil
		})
		tpAfter := r.tp.AuditCount(t, "db.create", "db.update", "db.delete")
		kAfter, err := world.AuditWrites(r.auditLog, "cnpg-teleport")
		if err != nil {
			t.Fatal(err)
		}
		if tpAfter != tpBefore {
			t.Errorf("Teleport db writes during 100 resyncs: %d", tpAfter-tpBefore)
		}
		if fmt.Sprint(kAfter) != fmt.Sprint(kBefore) {
			t.Errorf("Kubernetes writes during 100 resyncs: before %v after %v", kBefore, kAfter)
		}
		t.Logf("reconciles: %d; Teleport db writes total %d; Kubernetes writes by the controller %v", r.reconciles()-n0, tpAfter, kAfter)

		// The metrics a person would graph are there, with live values.
		m := r.metrics()
		for _, want := range []string{
			`cnpg_teleport_teleport_requests_total{method="ListDatabases",result="ok"}`,
			`cnpg_teleport_teleport_request_duration_seconds_count{method="ListDatabases"}`,
			`controller_runtime_reconcile_total{controller="cluster",result="requeue_after"}`,
		} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		var owned int
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "cnpg_teleport_registered_databases ") {
				owned, _ = strconv.Atoi(strings.Fields(l)[1])
			}
		}
		want := 0
		for _, db := range r.dbs("") {
			if db.GetStaticLabels()[dbspec.LabelKubeCluster] == kubeCluster {
				want++
			}
		}
		if owned != want {
			t.Errorf("cnpg_teleport_registered_databases = %d, want %d", owned, want)
		}
		_ = c
	})
}

func (r *reg) restartController() {
	r.t.Helper()
	args := r.ctrlArgs()
	kc := filepath.Join(r.w.Dir, "cnpg-teleport.kubeconfig")
	p, err := r.w.StartControllerAs("controller-k1", kc, args...)
	if err != nil {
		r.t.Fatal(err)
	}
	r.ctrl = p
}

func (r *reg) ctrlArgs() []string {
	id := filepath.Join(r.tp.Dir, "cnpg-teleport.identity")
	return []string{"--teleport-addr=" + r.tp.AuthAddr, "--identity-file=" + id,
		"--kube-cluster=" + kubeCluster, "--namespaces=" + regNS, "--labels=env=test", "--annotation-labels=team,tier",
		"--resync-period=" + resync.String(), "--metrics-bind-address=127.0.0.1:18080", "--health-probe-bind-address=127.0.0.1:18081"}
}

// metrics returns the first controller's Prometheus metrics.
func (r *reg) metrics() string {
	r.t.Helper()
	resp, err := http.Get("http://127.0.0.1:18080/metrics") //nolint:noctx // loopback
	if err != nil {
		r.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return string(b)
}

// waitPasses waits until the controller at addr has completed n more orphan
// collections (cnpg_teleport_orphan_passes_total): an observable in place of
// a sleep when what is checked is that nothing happened.
func (r *reg) waitPasses(addr string, n int) {
	r.t.Helper()
	count := func() (int, error) {
		v, err := metricValue(addr, "cnpg_teleport_orphan_passes_total")
		if err != nil {
			return 0, err
		}
		f, err := strconv.ParseFloat(v, 64)
		return int(f), err
	}
	var start int
	world.Eventually(r.t, 10*time.Second, "the orphan pass counter", func() (err error) {
		start, err = count()
		return err
	})
	world.Eventually(r.t, time.Duration(n+2)*resync+10*time.Second, fmt.Sprintf("%d orphan passes at %s", n, addr), func() error {
		now, err := count()
		if err == nil && now < start+n {
			return fmt.Errorf("%d of %d passes", now-start, n)
		}
		return err
	})
}

// reconciles reads controller_runtime_reconcile_total of the first controller.
func (r *reg) reconciles() int {
	r.t.Helper()
	return clusterReconciles(r.metrics())
}

// clusterReconciles sums controller_runtime_reconcile_total of the Cluster
// controller (every result) in Prometheus text.
func clusterReconciles(metrics string) int {
	total := 0
	sc := bufio.NewScanner(strings.NewReader(metrics))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "controller_runtime_reconcile_total{") && strings.Contains(l, `controller="cluster"`) {
			f := strings.Fields(l)
			n, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += int(n)
		}
	}
	return total
}
