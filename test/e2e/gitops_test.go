package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
	"sigs.k8s.io/yaml"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/pgrules"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// reapplies is how many times each way of applying re-applies the manifest.
const reapplies = 20

// userHBA is the user's own pg_hba line in the manifests that keep one.
const userHBA = "hostssl app app all scram-sha-256"

// gitopsWay is one way a GitOps tool re-applies the user's manifest.
type gitopsWay struct {
	name    string
	cluster string
	hba     bool // the manifest carries the user's pg_hba line
	// argo copies into the manifest, before applying, the live value of every
	// field the manager cnpg-teleport owns (Argo CD's ignoreDifferences
	// managedFieldsManagers [cnpg-teleport] with RespectIgnoreDifferences=true).
	argo bool
	// apply is kubectl's arguments after `apply -f FILE`: none for client-side
	// apply, server-side apply with force and the tool's field manager.
	apply []string
	// guarded: the README's settings for that tool are in place, so the
	// Teleport rule, the client CA and the roles must never flap.
	guarded bool
}

// TestGitOpsReapply re-applies the user's original Cluster manifest 20 times
// in each way Argo CD and Flux apply it, with real kubectl on the real
// apiserver, CNPG running the Cluster and connections going through the real
// Teleport the whole time; each re-apply is a new revision (an annotation
// changes, as a commit would), so each is a real write the controller sees.
// With the README's settings (Argo CD: ignoreDifferences on the cnpg-teleport
// manager with RespectIgnoreDifferences; Flux: pg_hba and clientCASecret left
// out of the manifest) the controller writes nothing, the Cluster never loses
// the Teleport rule or the client CA in any version the apiserver stored,
// and no connection fails. Without them (the manifest's pg_hba applied as
// is) every re-apply takes the rule away and the controller puts it back:
// one write per re-apply, counted, with the connections that failed.
// Neither Argo CD nor Flux runs here: the re-applies are kubectl's (Argo CD
// applies with kubectl's code, Flux with server-side apply and force), and
// RespectIgnoreDifferences is played by copying the live values of the
// fields the cnpg-teleport manager owns into the manifest (what Argo CD's
// normalizeTargetResources does with a managedFieldsManagers ignore rule).
func TestGitOpsReapply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	const ns = "gitops"
	opts, auditLog, err := world.AuditOptions(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := newTrustBed(t, ctx, ns, opts)
	g := &gitops{b: b, ns: ns, dir: t.TempDir(), auditLog: auditLog}

	// Both Clusters created as their tool creates them: Argo CD's by
	// client-side apply of a manifest with a pg_hba line of the user's, Flux's
	// by server-side apply of one without pg_hba and clientCASecret.
	ways := []gitopsWay{
		{name: "Argo CD, client-side apply, README settings", cluster: "argo", hba: true, argo: true, guarded: true},
		{name: "Argo CD, ServerSideApply=true, README settings", cluster: "argo", hba: true, argo: true, guarded: true,
			apply: []string{"--server-side", "--force-conflicts", "--field-manager=argocd-controller"}},
		{name: "Flux, server-side apply (force), README settings", cluster: "flux", guarded: true,
			apply: []string{"--server-side", "--force-conflicts", "--field-manager=kustomize-controller"}},
		{name: "no setting, client-side apply of pg_hba", cluster: "argo", hba: true},
		{name: "no setting, server-side apply (force) of pg_hba", cluster: "flux", hba: true,
			apply: []string{"--server-side", "--force-conflicts", "--field-manager=kustomize-controller"}},
	}
	g.kubectl(ctx, g.manifest("argo", 0, true), nil)
	g.kubectl(ctx, g.manifest("flux", 0, false), ways[2].apply)
	for _, name := range []string{"argo", "flux"} {
		if _, err := b.w.WaitClusterHealthy(ctx, ns, name, 5*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	user, err := b.tp.User(ctx, "gitops", []string{"teleport_write"}, []string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"argo", "flux"} {
		db := "k1-" + ns + "-" + name + "-rw"
		world.Eventually(t, 2*time.Minute, "tsh db connect "+db, func() error {
			out, err := sql(ctx, user, db, "teleport_write", "SELECT 'ok=' || 1;")
			if err != nil || !strings.Contains(out, "ok=1") {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		})
	}
	flaps := g.watch(ctx)

	rev := 0
	for _, way := range ways {
		db := "k1-" + ns + "-" + way.cluster + "-rw"
		conns := startConnecting(ctx, user, db)
		flaps.reset(way.cluster)
		before := g.controllerWrites()
		for range reapplies {
			rev++
			target := g.manifest(way.cluster, rev, way.hba)
			if way.argo {
				target = g.respectIgnoreDifferences(ctx, way.cluster, target)
			}
			n0 := g.reconciles()
			g.kubectl(ctx, target, way.apply)
			g.settled(ctx, way.cluster, n0)
		}
		attempts, failures, firstErr := conns.stop()
		writes := g.controllerWrites() - before
		lost := flaps.count(way.cluster)
		g.revisionApplied(ctx, way.cluster, rev)
		t.Logf("%s: %d re-applies, controller writes %d, versions without the Teleport rule or client CA %d, "+
			"connections through Teleport %d, failed %d%s", way.name, reapplies, writes, lost, attempts, failures, firstErr)
		if writes > reapplies {
			t.Errorf("%s: %d controller writes for %d re-applies (at most one each)", way.name, writes, reapplies)
		}
		if attempts == 0 {
			t.Errorf("%s: no connection attempted during the re-applies", way.name)
		}
		if way.guarded {
			if writes != 0 || lost != 0 || failures != 0 {
				t.Errorf("%s: with the README's settings: %d controller writes, %d versions without the rule or CA, %d failed connections%s (want 0, 0, 0)",
					way.name, writes, lost, failures, firstErr)
			}
		} else if lost == 0 || writes == 0 {
			t.Errorf("%s: without the settings the manifest takes the rule away (the README's warning): %d versions without it, %d writes",
				way.name, lost, writes)
		}
	}
}

type gitops struct {
	b        *trustBed
	ns, dir  string
	auditLog string
	n        int
}

// manifest is the user's manifest in Git at revision rev.
func (g *gitops) manifest(name string, rev int, hba bool) map[string]any {
	pg := map[string]any{"parameters": map[string]any{"log_min_duration_statement": "1000"}}
	if hba {
		pg["pg_hba"] = []any{userHBA}
	}
	return map[string]any{
		"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
		"metadata": map[string]any{"name": name, "namespace": g.ns, "annotations": map[string]any{
			"cnpg-teleport.io/register": "true", "example.com/git-revision": strconv.Itoa(rev),
		}},
		"spec": map[string]any{"instances": int64(1), "imageName": world.PostgresImage(),
			"storage": map[string]any{"size": "1Gi"}, "postgresql": pg},
	}
}

// kubectl applies the manifest with the real kubectl as the world's admin.
func (g *gitops) kubectl(ctx context.Context, manifest map[string]any, apply []string) {
	g.b.t.Helper()
	raw, err := yaml.Marshal(manifest)
	if err != nil {
		g.b.t.Fatal(err)
	}
	g.n++
	file := filepath.Join(g.dir, fmt.Sprintf("manifest-%d.yaml", g.n))
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		g.b.t.Fatal(err)
	}
	dir, err := world.ToolDir("kubectl")
	if err != nil {
		g.b.t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "kubectl"), append([]string{"apply", "-f", file}, apply...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+g.b.w.Kubeconfig)
	if out, err := cmd.CombinedOutput(); err != nil {
		g.b.t.Fatalf("kubectl apply %v: %v\n%s\n%s", apply, err, out, raw)
	}
}

// respectIgnoreDifferences plays Argo CD's RespectIgnoreDifferences=true
// with ignoreDifferences managedFieldsManagers [cnpg-teleport]: every field
// the manifest sets that the cnpg-teleport manager owns in the live object
// takes the live value (fields the manifest leaves out stay out).
func (g *gitops) respectIgnoreDifferences(ctx context.Context, name string, target map[string]any) map[string]any {
	g.b.t.Helper()
	live := &unstructured.Unstructured{}
	live.SetAPIVersion("postgresql.cnpg.io/v1")
	live.SetKind("Cluster")
	if err := g.b.w.Client.Get(ctx, client.ObjectKey{Namespace: g.ns, Name: name}, live); err != nil {
		g.b.t.Fatal(err)
	}
	owned := 0
	for _, mf := range live.GetManagedFields() {
		if mf.Manager != controllers.FieldManager || mf.FieldsV1 == nil {
			continue
		}
		var set fieldpath.Set
		if err := set.FromJSON(mf.FieldsV1.GetRawReader()); err != nil {
			g.b.t.Fatal(err)
		}
		set.Leaves().Iterate(func(p fieldpath.Path) {
			var keys []string
			for _, pe := range p {
				if pe.FieldName == nil {
					if _, found, _ := unstructured.NestedFieldNoCopy(target, keys...); found {
						g.b.t.Fatalf("the manifest sets %s, which this stand-in does not normalize", p)
					}
					return // a list item or map key under a field the manifest leaves out
				}
				keys = append(keys, *pe.FieldName)
			}
			owned++
			tv, found, _ := unstructured.NestedFieldNoCopy(target, keys...)
			lv, _, _ := unstructured.NestedFieldCopy(live.Object, keys...)
			if found && !equality.Semantic.DeepEqual(tv, lv) {
				if err := unstructured.SetNestedField(target, lv, keys...); err != nil {
					g.b.t.Fatal(err)
				}
			}
		})
	}
	if owned == 0 {
		g.b.t.Fatalf("no field of %s is owned by the manager cnpg-teleport: managers %v", name, managers(live))
	}
	return target
}

func managers(o *unstructured.Unstructured) []string {
	var out []string
	for _, mf := range o.GetManagedFields() {
		out = append(out, mf.Manager+"/"+string(mf.Operation))
	}
	return out
}

// reconciles is controller_runtime_reconcile_total of the Cluster controller.
func (g *gitops) reconciles() int {
	g.b.t.Helper()
	total := 0
	world.Eventually(g.b.t, 10*time.Second, "the controller's metrics", func() error {
		body, err := metricsBody("127.0.0.1:18080")
		total = clusterReconciles(body)
		return err
	})
	return total
}

// settled waits until the controller has finished two passes since n0 (so
// at least one began after the apply) and the Cluster carries the Teleport
// rule and client CA again.
func (g *gitops) settled(ctx context.Context, name string, n0 int) {
	g.b.t.Helper()
	world.Eventually(g.b.t, time.Minute, "the controller settles after the re-apply", func() error {
		if n := g.reconciles(); n < n0+2 {
			return fmt.Errorf("%d passes since the apply", n-n0)
		}
		var c cnpgv1.Cluster
		if err := g.b.w.Client.Get(ctx, client.ObjectKey{Namespace: g.ns, Name: name}, &c); err != nil {
			return err
		}
		if !trusted(&c) {
			return fmt.Errorf("pg_hba %q, client CA %q", c.Spec.PostgresConfiguration.PgHBA, c.Spec.Certificates.ClientCASecret)
		}
		return nil
	})
}

// revisionApplied checks the last revision's user fields are live: the
// re-applies did apply.
func (g *gitops) revisionApplied(ctx context.Context, name string, rev int) {
	g.b.t.Helper()
	var c cnpgv1.Cluster
	if err := g.b.w.Client.Get(ctx, client.ObjectKey{Namespace: g.ns, Name: name}, &c); err != nil {
		g.b.t.Fatal(err)
	}
	if got := c.Annotations["example.com/git-revision"]; got != strconv.Itoa(rev) {
		g.b.t.Fatalf("%s: revision %q live, want %d", name, got, rev)
	}
}

// trusted: the Cluster has the Teleport rule and the controller's client CA.
func trusted(c *cnpgv1.Cluster) bool {
	return slices.Contains(c.Spec.PostgresConfiguration.PgHBA, pgrules.HBALine("teleport_read", "teleport_write")) &&
		c.Spec.Certificates.ClientCASecret == c.Name+"-teleport-ca"
}

// controllerWrites counts the controller's writes other than Events in the
// apiserver's audit log.
func (g *gitops) controllerWrites() int {
	g.b.t.Helper()
	counts, err := world.AuditWrites(g.auditLog, "cnpg-teleport")
	if err != nil {
		g.b.t.Fatal(err)
	}
	n := 0
	for k, v := range counts {
		if !strings.HasSuffix(k, " events") {
			n += v
		}
	}
	return n
}

// flapWatch counts, per Cluster, the versions the apiserver stored without
// the Teleport rule or the client CA.
type flapWatch struct {
	mu   sync.Mutex
	lost map[string]int
}

func (f *flapWatch) reset(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lost[name] = 0
}

func (f *flapWatch) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lost[name]
}

// watch watches the namespace's Clusters from now on; a broken watch fails
// the test (a version could have been missed).
func (g *gitops) watch(ctx context.Context) *flapWatch {
	g.b.t.Helper()
	wc, err := client.NewWithWatch(g.b.w.Config, client.Options{Scheme: g.b.w.Scheme})
	if err != nil {
		g.b.t.Fatal(err)
	}
	wi, err := wc.Watch(ctx, &cnpgv1.ClusterList{}, client.InNamespace(g.ns))
	if err != nil {
		g.b.t.Fatal(err)
	}
	f := &flapWatch{lost: map[string]int{}}
	broken := make(chan struct{})
	go func() {
		defer close(broken)
		for ev := range wi.ResultChan() {
			c, ok := ev.Object.(*cnpgv1.Cluster)
			if !ok || ev.Type != watch.Modified {
				continue
			}
			if !trusted(c) {
				f.mu.Lock()
				f.lost[c.Name]++
				f.mu.Unlock()
			}
		}
	}()
	g.b.t.Cleanup(func() {
		select {
		case <-broken:
			if ctx.Err() == nil {
				g.b.t.Error("the Cluster watch ended during the test: versions may have been missed")
			}
		default:
		}
		wi.Stop()
	})
	return f
}

// connector runs `tsh db connect` through Teleport in a loop.
type connector struct {
	cancel   context.CancelFunc
	done     chan struct{}
	attempts int
	failures int
	firstErr string
}

func startConnecting(ctx context.Context, u *world.TshUser, db string) *connector {
	ctx, cancel := context.WithCancel(ctx)
	c := &connector{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for ctx.Err() == nil {
			out, err := sql(ctx, u, db, "teleport_write", "SELECT 'ok=' || 1;")
			if ctx.Err() != nil {
				return // cut by stop: not counted
			}
			c.attempts++
			if err != nil || !strings.Contains(out, "ok=1") {
				c.failures++
				if c.firstErr == "" {
					c.firstErr = fmt.Sprintf(" (first: %v %s)", err, firstLine(out))
				}
			}
		}
	}()
	return c
}

func (c *connector) stop() (attempts, failures int, firstErr string) {
	c.cancel()
	<-c.done
	return c.attempts, c.failures, c.firstErr
}
