package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// chartNS is where the chart is installed (its ServiceAccount, the identity
// Secret tbot would write).
const chartNS = "cnpg-teleport"

// chartBed is one world and one Teleport for installing the chart in both modes.
type chartBed struct {
	t    *testing.T
	ctx  context.Context
	w    *world.World
	tp   *world.Teleport
	tc   teleport.Client // the controller's identity, to see its db resources
	helm string          // helm's homes
}

// TestChartInstall installs the chart into the world's apiserver in cluster
// and in namespaced mode (every object accepted; in the last one also the
// ServiceMonitor and PrometheusRule, against the Prometheus operator's real
// CRDs); the world's kubelet runs
// the installed Deployment's Pods (the controller as the chart's
// ServiceAccount, with the chart's args, mounts and probes): an annotated
// Cluster the real CNPG runs is registered in Teleport and trusted, so the
// chart's RBAC suffices. In cluster mode two replicas elect a leader and hand
// the Lease over when it goes. It then shows, with a token of that
// ServiceAccount, what it may not do.
func TestChartInstall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	w := world.Start(t, world.Options{MonitoringCRDs: true}) // the Prometheus operator's CRDs: see monitoring
	tp := startTeleport(t)
	for _, ns := range []string{chartNS, "appc", "appn", "appx", "other"} {
		if err := w.Namespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	id, err := tp.ControllerIdentity(ctx, "cnpg-teleport", time.Hour, "kc", "kn", "kx")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(id)
	if err != nil {
		t.Fatal(err)
	}
	// The Secret tbot's kubernetes_secret destination writes.
	if err := w.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: chartNS, Name: "tbot-identity"},
		Data: map[string][]byte{"identity": raw}}); err != nil {
		t.Fatal(err)
	}
	// A Secret the controller has no business with, in a namespace it does not watch.
	if err := w.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "private"},
		StringData: map[string]string{"password": "x"}}); err != nil {
		t.Fatal(err)
	}
	tc, err := teleport.New(ctx, teleport.Config{Addrs: []string{tp.AuthAddr}, IdentityFile: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.Close() })
	b := &chartBed{t: t, ctx: ctx, w: w, tp: tp, tc: tc, helm: t.TempDir()}

	t.Run("cluster mode", func(t *testing.T) {
		b.t = t
		// Two replicas: leader election on (the chart adds --leader-elect
		// and its Role); the Lease is handed over when the leader goes.
		sa, d := b.install("ctc", "kc", "appc", "rbac.mode=cluster", "replicas=2")
		first := b.leader(d, "")
		t0 := time.Now()
		if err := w.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: chartNS, Name: first}}); err != nil {
			t.Fatal(err)
		}
		next := b.leader(d, first)
		t.Logf("leader %s deleted: %s took the Lease over in %s", first, next, time.Since(t0).Round(100*time.Millisecond))
		b.registered(d, "kc", "appc", "pg2")
		b.noForbidden(d)
		// Cluster mode grants Secrets (get/list/watch/create/update/delete)
		// in every namespace: the controller reads the CA Secrets a Cluster
		// names wherever Clusters are. It grants nothing else on them, and
		// nothing on what the controller never touches.
		b.allowed(sa, &corev1.Secret{}, "other", "private")
		b.forbidden("patch a Secret", func() error {
			return sa.Patch(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "private"}},
				client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"labels":{"x":"y"}}}`)))
		})
		b.forbidden("get a ConfigMap", func() error {
			return sa.Get(ctx, client.ObjectKey{Namespace: "other", Name: "kube-root-ca.crt"}, &corev1.ConfigMap{})
		})
		b.forbidden("get Namespace default", func() error {
			return sa.Get(ctx, client.ObjectKey{Name: "default"}, &corev1.Namespace{})
		})
		b.forbidden("list Pods", func() error { return sa.List(ctx, &corev1.PodList{}) })
	})
	t.Run("namespaced mode", func(t *testing.T) {
		b.t = t
		sa, d := b.install("ctn", "kn", "appn", "rbac.mode=namespaced", "watchNamespaces={appn}")
		// No Secret outside the watched namespace: not one in a namespace
		// it does not watch, not its own identity Secret, no cluster-wide list.
		b.forbidden("get a Secret in an unwatched namespace", func() error {
			return sa.Get(ctx, client.ObjectKey{Namespace: "other", Name: "private"}, &corev1.Secret{})
		})
		b.forbidden("get the identity Secret in the chart's namespace", func() error {
			return sa.Get(ctx, client.ObjectKey{Namespace: chartNS, Name: "tbot-identity"}, &corev1.Secret{})
		})
		b.forbidden("list Secrets cluster-wide", func() error { return sa.List(ctx, &corev1.SecretList{}) })
		b.forbidden("list Clusters in an unwatched namespace", func() error {
			return sa.List(ctx, &cnpgv1.ClusterList{}, client.InNamespace("appc"))
		})
		b.forbidden("get Namespace default", func() error {
			return sa.Get(ctx, client.ObjectKey{Name: "default"}, &corev1.Namespace{})
		})
		// ...while the same token reads the CA Secret of a watched Cluster.
		b.allowed(sa, &corev1.Secret{}, "appn", "pg-ca")
		b.uninstallOptedIn(d, "appn", "pg", "kn-appn-pg-rw")
	})
	t.Run("namespaced mode with kubeClusterID", func(t *testing.T) {
		b.t = t
		// With its identity given, the controller needs nothing cluster-scoped:
		// the chart binds no ClusterRole at all.
		sa, _ := b.install("ctx", "kx", "appx", "rbac.mode=namespaced", "watchNamespaces={appx}", "kubeClusterID=world-x",
			"metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")
		b.monitoring("ctx")
		b.forbidden("get Namespace kube-system", func() error {
			return sa.Get(ctx, client.ObjectKey{Name: "kube-system"}, &corev1.Namespace{})
		})
	})
}

// install installs the chart as release and checks every object it made is
// in the apiserver; the world's kubelet then runs the Deployment's Pods from
// the controller image (the controller binary at the image's entrypoint, the
// chart's args, the identity Secret mounted, the ServiceAccount's token at
// the in-cluster path), and the test waits for them to be Ready by the
// chart's readiness probe. An annotated 1-instance Cluster pg in appNS must
// then be registered as kube and trusted, so the chart's RBAC suffices. It
// returns a client with the ServiceAccount's token, and the Deployment.
func (b *chartBed) install(release, kube, appNS string, sets ...string) (client.Client, *appsv1.Deployment) {
	t, ctx, w := b.t, b.ctx, b.w
	t.Helper()
	args := []string{"install", release, world.ChartDir(), "--namespace", chartNS, "--kubeconfig", w.Kubeconfig,
		"--set", "teleport.address=" + b.tp.PodAuthAddr, "--set", "teleport.identity.secretName=tbot-identity",
		"--set", "kubeCluster=" + kube, "--set", "resyncPeriod=2s", "--set", "metrics.service.enabled=true"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	if out, err := world.Helm(ctx, b.helm, args...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	manifest, err := world.Helm(ctx, b.helm, "get", "manifest", release, "--namespace", chartNS, "--kubeconfig", w.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := world.Manifests(manifest)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		ns := o.GetNamespace()
		if ns == "" && o.GetKind() != "ClusterRole" && o.GetKind() != "ClusterRoleBinding" {
			ns = chartNS
		}
		if err := w.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: o.GetName()}, got); err != nil {
			t.Fatalf("%s %s/%s: %v", o.GetKind(), ns, o.GetName(), err)
		}
		kinds = append(kinds, o.GetKind()+"/"+o.GetName())
	}
	t.Logf("helm install %s: %d objects in the apiserver: %s", release, len(objs), strings.Join(kinds, " "))

	fullname := release + "-cnpg-teleport"
	sa := b.serviceAccountClient(fullname)
	d := &appsv1.Deployment{}
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: chartNS, Name: fullname}, d); err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; !world.IsControllerImage(img) {
		t.Fatalf("the chart's image %s is not the controller image %s the world runs", img, world.ControllerImage)
	}
	t0 := time.Now()
	pods := b.readyPods(d)
	t.Logf("%d controller Pod(s) Ready in %s: %s", len(pods), time.Since(t0).Round(100*time.Millisecond), strings.Join(pods, " "))
	b.registered(d, kube, appNS, "pg")
	b.noForbidden(d)
	return sa, d
}

// noForbidden fails the test when a controller Pod's log shows a request
// the apiserver refused: the chart's RBAC must cover every call the
// controller made, its leader election's Events included.
func (b *chartBed) noForbidden(d *appsv1.Deployment) {
	b.t.Helper()
	for _, p := range b.pods(d) {
		for _, line := range strings.Split(b.w.ContainerLog(p.Namespace, p.Name, "controller"), "\n") {
			if strings.Contains(line, "is forbidden") {
				b.t.Errorf("controller Pod %s was refused by RBAC: %s", p.Name, line)
			}
		}
	}
}

// registered creates an annotated 1-instance Cluster name in appNS and waits
// until CNPG runs the bundle and Teleport has its rw db resource, failing at
// once when a controller Pod's container ends.
func (b *chartBed) registered(d *appsv1.Deployment, kube, appNS, name string) {
	t, ctx, w := b.t, b.ctx, b.w
	t.Helper()
	c := world.NewCluster(appNS, name, 1)
	c.Annotations = map[string]string{dbspec.AnnotationRegister: "true"}
	t0 := time.Now()
	if err := w.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	db := kube + "-" + appNS + "-" + name + "-rw"
	world.Eventually(t, 2*time.Minute, "Cluster "+appNS+"/"+name+" trusted and registered as "+db, func() error {
		b.podsRunning(d) // a crashed controller will not come back: say so now
		var got cnpgv1.Cluster
		if err := w.Client.Get(ctx, client.ObjectKeyFromObject(c), &got); err != nil {
			return err
		}
		if ca := got.Status.Certificates.ClientCASecret; ca != name+"-teleport-ca" {
			return fmt.Errorf("CNPG runs client CA %q", ca)
		}
		dbs, err := b.tc.ListDatabases(ctx)
		if err != nil {
			return err
		}
		for _, d := range dbs {
			if d.GetName() == db {
				return nil
			}
		}
		return fmt.Errorf("no db %s in Teleport (%d others)", db, len(dbs))
	})
	t.Logf("%s/%s trusted and registered as %s in %s", appNS, name, db, time.Since(t0).Round(100*time.Millisecond))
}

// monitoring checks the release's ServiceMonitor and PrometheusRule, which
// install got back from the apiserver (so accepted against the Prometheus
// operator's real CRDs): the ServiceMonitor selects the release's metrics
// Service and no other release's (the earlier subtests' share chartNS), in
// its own namespace, on a port the Service has, whose target is a port of the
// controller's container. The CRDs' schemas are enforced, not decorative: a
// duration Prometheus would not parse is refused (values.schema.json
// refuses it before, see test/chart). The rules' PromQL is checked in test/chart.
func (b *chartBed) monitoring(release string) {
	t, ctx, w := b.t, b.ctx, b.w
	t.Helper()
	fullname := release + "-cnpg-teleport"
	monitoring := func(kind string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: kind})
		if err := w.Client.Get(ctx, client.ObjectKey{Namespace: chartNS, Name: fullname}, u); err != nil {
			t.Fatalf("%s %s/%s: %v", kind, chartNS, fullname, err)
		}
		return u
	}
	sm, rule := monitoring("ServiceMonitor"), monitoring("PrometheusRule")

	var spec struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			Any        bool     `json:"any"`
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port string `json:"port"`
		} `json:"endpoints"`
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(sm.Object["spec"].(map[string]any), &spec); err != nil {
		t.Fatal(err)
	}
	if spec.NamespaceSelector.Any || len(spec.NamespaceSelector.MatchNames) > 0 {
		t.Errorf("ServiceMonitor looks beyond its own namespace: %+v", spec.NamespaceSelector)
	}
	sel, err := metav1.LabelSelectorAsSelector(&spec.Selector)
	if err != nil || sel.Empty() {
		t.Fatalf("ServiceMonitor selector %+v: %v (empty selects every Service)", spec.Selector, err)
	}
	var svcs corev1.ServiceList
	if err := w.Client.List(ctx, &svcs, client.InNamespace(chartNS)); err != nil {
		t.Fatal(err)
	}
	var selected []corev1.Service
	for _, s := range svcs.Items {
		if sel.Matches(labels.Set(s.Labels)) {
			selected = append(selected, s)
		}
	}
	if len(selected) != 1 || selected[0].Name != fullname+"-metrics" {
		t.Fatalf("ServiceMonitor selector %s selects %d of %d Services in %s, want only %s-metrics", sel, len(selected), len(svcs.Items), chartNS, fullname)
	}
	svc := selected[0]
	var d appsv1.Deployment
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: chartNS, Name: fullname}, &d); err != nil {
		t.Fatal(err)
	}
	if len(spec.Endpoints) == 0 {
		t.Fatal("ServiceMonitor has no endpoint")
	}
	for _, e := range spec.Endpoints {
		i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port })
		if i < 0 {
			t.Errorf("ServiceMonitor endpoint port %q: Service %s has ports %+v", e.Port, svc.Name, svc.Spec.Ports)
			continue
		}
		target := svc.Spec.Ports[i].TargetPort.String()
		if !slices.ContainsFunc(d.Spec.Template.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == target }) {
			t.Errorf("Service port %q targets %q, which the controller's container does not name", e.Port, target)
		}
	}
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Service %s selector %v does not select the controller's Pods %v", svc.Name, svc.Spec.Selector, d.Spec.Template.Labels)
	}
	if groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups"); len(groups) == 0 {
		t.Error("PrometheusRule has no group")
	}

	// The same durations in both CRDs: Prometheus's (90s, 90m), not Go's (1.5m).
	objects := map[string]func(d string) map[string]any{
		"ServiceMonitor": func(d string) map[string]any {
			return map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"x": "y"}},
				"endpoints": []any{map[string]any{"port": "metrics", "interval": d}}}
		},
		"PrometheusRule": func(d string) map[string]any {
			return map[string]any{"groups": []any{map[string]any{"name": "g",
				"rules": []any{map[string]any{"alert": "A", "expr": "vector(1)", "for": d}}}}}
		},
	}
	for kind, spec := range objects {
		for dur, ok := range map[string]bool{"90s": true, "90m": true, "1.5m": false} {
			u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "monitoring.coreos.com/v1", "kind": kind,
				"metadata": map[string]any{"namespace": chartNS, "name": "duration-check"}, "spec": spec(dur)}}
			err := w.Client.Create(ctx, u, client.DryRunAll)
			if (ok && err != nil) || (!ok && !apierrors.IsInvalid(err)) {
				t.Errorf("%s with duration %s (dry run): want accepted=%v, got %v", kind, dur, ok, err)
			}
		}
	}
	t.Logf("ServiceMonitor %s selects only Service %s (selector %s, port %s); PrometheusRule %s accepted; CRD schemas enforced",
		sm.GetName(), svc.Name, sel, spec.Endpoints[0].Port, rule.GetName())
}

// uninstallOptedIn uninstalls the release of d without opting the Cluster
// out first (the README says what then happens): the controller goes, the
// Cluster keeps its bundle (the Cluster owns it) and starts again on it (its
// Pod deleted, CNPG brings it back healthy), and its db resource stays in
// Teleport (nothing deregisters it).
func (b *chartBed) uninstallOptedIn(d *appsv1.Deployment, ns, cluster, db string) {
	t, ctx, w := b.t, b.ctx, b.w
	t.Helper()
	release := d.Labels["app.kubernetes.io/instance"]
	if _, err := w.WaitClusterHealthy(ctx, ns, cluster, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if out, err := world.Helm(ctx, b.helm, "uninstall", release, "--namespace", chartNS, "--kubeconfig", w.Kubeconfig); err != nil {
		t.Fatalf("helm uninstall %s: %v\n%s", release, err, out)
	}
	world.Eventually(t, time.Minute, "the Pods of "+release+" gone", func() error {
		var list corev1.PodList
		if err := w.Client.List(ctx, &list, client.InNamespace(chartNS), client.MatchingLabels(d.Spec.Selector.MatchLabels)); err != nil {
			return err
		}
		if len(list.Items) > 0 {
			return fmt.Errorf("%d left", len(list.Items))
		}
		return nil
	})
	t0 := time.Now()
	c, err := w.RestartClusterPod(ctx, ns, cluster, cluster+"-1", 3*time.Minute)
	if err != nil {
		t.Fatalf("%s/%s after uninstall: %v", ns, cluster, err)
	}
	if ca := c.Status.Certificates.ClientCASecret; ca != cluster+"-teleport-ca" {
		t.Fatalf("%s/%s runs client CA %q after uninstall, want the bundle it kept", ns, cluster, ca)
	}
	dbs, err := b.tc.ListDatabases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(dbs, func(x teleport.DatabaseMeta) bool { return x.Name == db }) {
		t.Fatalf("%s gone from Teleport after an uninstall without opt-out: nothing should have deregistered it", db)
	}
	t.Logf("%s uninstalled with %s/%s opted in: the Cluster came back healthy on its bundle in %s, %s still registered",
		release, ns, cluster, time.Since(t0).Round(100*time.Millisecond), db)
}

// pods lists the Deployment's Pods that are not being deleted.
func (b *chartBed) pods(d *appsv1.Deployment) []corev1.Pod {
	b.t.Helper()
	var list corev1.PodList
	if err := b.w.Client.List(b.ctx, &list, client.InNamespace(d.Namespace), client.MatchingLabels(d.Spec.Selector.MatchLabels)); err != nil {
		b.t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// readyPods waits until the Deployment has as many Ready Pods as replicas.
func (b *chartBed) readyPods(d *appsv1.Deployment) []string {
	b.t.Helper()
	var names []string
	world.Eventually(b.t, 2*time.Minute, "controller Pods of "+d.Name+" Ready", func() error {
		b.podsRunning(d)
		names = nil
		for _, p := range b.pods(d) {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					names = append(names, p.Name)
				}
			}
		}
		if len(names) != int(*d.Spec.Replicas) {
			return fmt.Errorf("%d of %d Ready", len(names), *d.Spec.Replicas)
		}
		return nil
	})
	return names
}

// podsRunning fails the test at once, with the container's log, when a
// controller container has ended or restarted, or cannot start.
func (b *chartBed) podsRunning(d *appsv1.Deployment) {
	b.t.Helper()
	for _, p := range b.pods(d) {
		for _, cs := range p.Status.ContainerStatuses {
			bad := cs.RestartCount > 0 || cs.State.Terminated != nil
			if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" {
				bad = true
			}
			if bad {
				b.t.Fatalf("controller Pod %s: container %s %+v (restarts %d):\n%s", p.Name, cs.Name, cs.State, cs.RestartCount,
					b.w.ContainerLog(p.Namespace, p.Name, cs.Name))
			}
		}
	}
}

// leader waits until exactly one of the Deployment's Pods other than not
// says in its log that it acquired the Lease (client-go's leader election:
// "Successfully acquired lease"), and returns it. The Lease's holder names
// the host, which all the world's Pods share, so the log tells which Pod.
func (b *chartBed) leader(d *appsv1.Deployment, not string) string {
	b.t.Helper()
	var leader string
	world.Eventually(b.t, time.Minute, "one controller Pod of "+d.Name+" leading", func() error {
		var leaders []string
		for _, p := range b.pods(d) {
			if p.Name != not && strings.Contains(strings.ToLower(b.w.ContainerLog(p.Namespace, p.Name, "controller")), "successfully acquired lease") {
				leaders = append(leaders, p.Name)
			}
		}
		if len(leaders) != 1 {
			return fmt.Errorf("leaders %v", leaders)
		}
		leader = leaders[0]
		return nil
	})
	return leader
}

// serviceAccountClient mints a token for the chart's ServiceAccount with the
// TokenRequest API (as the kubelet does for a Pod) and returns a client that
// uses it, to show what the ServiceAccount may and may not do.
func (b *chartBed) serviceAccountClient(name string) client.Client {
	t, ctx, w := b.t, b.ctx, b.w
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: chartNS, Name: name}}
	hour := int64(3600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &hour}}
	if err := w.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", chartNS, name, err)
	}
	c, err := client.New(&rest.Config{Host: w.Config.Host, BearerToken: tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: w.Config.CAData}}, client.Options{Scheme: w.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// forbidden checks that the ServiceAccount's request is refused by RBAC (403).
func (b *chartBed) forbidden(what string, do func() error) {
	b.t.Helper()
	if err := do(); !apierrors.IsForbidden(err) {
		b.t.Errorf("%s: want Forbidden, got %v", what, err)
	} else {
		b.t.Logf("%s: Forbidden", what)
	}
}

// allowed checks that the ServiceAccount may get the object (the token works:
// a Forbidden elsewhere is RBAC, not a bad token).
func (b *chartBed) allowed(sa client.Client, obj client.Object, ns, name string) {
	b.t.Helper()
	if err := sa.Get(b.ctx, client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		b.t.Errorf("get %T %s/%s as the ServiceAccount: %v", obj, ns, name, err)
	}
}
