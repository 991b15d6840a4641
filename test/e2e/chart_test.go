package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
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
// CRDs), then runs the controller binary with the flags of the installed
// Deployment, as the chart's ServiceAccount (a TokenRequest token): an
// annotated Cluster the real CNPG runs is registered in Teleport and
// trusted, so the chart's RBAC suffices.
// It then shows, with that token, what the ServiceAccount may not do.
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
		sa := b.install("ctc", "kc", "appc", "18090", "rbac.mode=cluster")
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
		sa := b.install("ctn", "kn", "appn", "18092", "rbac.mode=namespaced", "watchNamespaces={appn}")
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
	})
	t.Run("namespaced mode with kubeClusterID", func(t *testing.T) {
		b.t = t
		// With its identity given, the controller needs nothing cluster-scoped:
		// the chart binds no ClusterRole at all.
		sa := b.install("ctx", "kx", "appx", "18094", "rbac.mode=namespaced", "watchNamespaces={appx}", "kubeClusterID=world-x",
			"metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")
		b.monitoring("ctx")
		b.forbidden("get Namespace kube-system", func() error {
			return sa.Get(ctx, client.ObjectKey{Name: "kube-system"}, &corev1.Namespace{})
		})
	})
}

// install installs the chart as release with the Deployment at 0 replicas
// (the world kubelet has no controller image) and checks every object it
// made is in the apiserver; then it runs the controller with the installed
// Deployment's flags as the release's ServiceAccount, and an annotated
// 1-instance Cluster pg in appNS must be registered as kube and trusted.
// It returns a client with the ServiceAccount's token.
func (b *chartBed) install(release, kube, appNS, port string, sets ...string) client.Client {
	t, ctx, w := b.t, b.ctx, b.w
	t.Helper()
	args := []string{"install", release, world.ChartDir(), "--namespace", chartNS, "--kubeconfig", w.Kubeconfig,
		"--set", "replicas=0", "--set", "teleport.address=" + b.tp.AuthAddr, "--set", "teleport.identity.secretName=tbot-identity",
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
	kubeconfig, sa := b.serviceAccountKubeconfig(fullname)
	var d appsv1.Deployment
	if err := w.Client.Get(ctx, client.ObjectKey{Namespace: chartNS, Name: fullname}, &d); err != nil {
		t.Fatal(err)
	}
	flags := b.podFlags(d.Spec.Template.Spec, port)
	p, err := w.StartControllerAs("controller-"+release, kubeconfig, flags...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	t.Logf("controller as system:serviceaccount:%s:%s: %s", chartNS, fullname, strings.Join(flags, " "))

	c := world.NewCluster(appNS, "pg", 1)
	c.Annotations = map[string]string{controllers.AnnotationRegister: "true"}
	t0 := time.Now()
	if err := w.Client.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	db := kube + "-" + appNS + "-pg-rw"
	world.Eventually(t, 2*time.Minute, "Cluster "+appNS+"/pg trusted and registered as "+db, func() error {
		if exited, err := p.Exited(); exited { // it will not come back: say so now
			t.Fatalf("controller exited (%v): %s", err, p.Tail(4<<10))
		}
		var got cnpgv1.Cluster
		if err := w.Client.Get(ctx, client.ObjectKeyFromObject(c), &got); err != nil {
			return err
		}
		if ca := got.Status.Certificates.ClientCASecret; ca != "pg-teleport-ca" {
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
	t.Logf("%s/pg trusted and registered as %s in %s", appNS, db, time.Since(t0).Round(100*time.Millisecond))
	return sa
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

// serviceAccountKubeconfig mints a token for the chart's ServiceAccount with
// the TokenRequest API (as the kubelet does for a Pod) and writes a kubeconfig
// with it; it also returns a client that uses it.
func (b *chartBed) serviceAccountKubeconfig(name string) (string, client.Client) {
	t, ctx, w := b.t, b.ctx, b.w
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: chartNS, Name: name}}
	hour := int64(3600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &hour}}
	if err := w.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", chartNS, name, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["world"] = &clientcmdapi.Cluster{Server: w.Config.Host, CertificateAuthorityData: w.Config.CAData}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: "world", AuthInfo: name}
	cfg.CurrentContext = name
	path := filepath.Join(w.Dir, name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(&rest.Config{Host: w.Config.Host, BearerToken: tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: w.Config.CAData}}, client.Options{Scheme: w.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return path, c
}

// podFlags are the controller container's flags as the chart rendered them,
// with the mounted identity Secret written to a directory (as the kubelet
// mounts it) and the listeners on loopback ports (port, port+1).
func (b *chartBed) podFlags(pod corev1.PodSpec, port string) []string {
	t := b.t
	t.Helper()
	mount := pod.Containers[0].VolumeMounts[0]
	var s corev1.Secret
	if err := b.w.Client.Get(b.ctx, client.ObjectKey{Namespace: chartNS, Name: pod.Volumes[0].Secret.SecretName}, &s); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "identity")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for k, v := range s.Data {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	next := port[:len(port)-1] + string(port[len(port)-1]+1)
	var flags []string
	for _, a := range pod.Containers[0].Args {
		switch {
		case strings.HasPrefix(a, "--metrics-bind-address="):
			a = "--metrics-bind-address=127.0.0.1:" + port
		case strings.HasPrefix(a, "--health-probe-bind-address="):
			a = "--health-probe-bind-address=127.0.0.1:" + next
		default:
			a = strings.Replace(a, "="+mount.MountPath+"/", "="+dir+"/", 1)
		}
		flags = append(flags, a)
	}
	return flags
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
