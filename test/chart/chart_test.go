// Package chart tests the Helm chart charts/cnpg-teleport with the real Helm
// (hack/tools.sh helm): lint, the values schema, and what it renders: the
// Deployment's hardening and flags, and RBAC that grants exactly what
// config/rbac grants, no more. Installing it and running the controller as
// its ServiceAccount is in test/e2e (TestChartInstall).
package chart

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

const release, releaseNS = "ct", "cnpg-teleport"

// required are the values without which the chart refuses to render.
var required = []string{
	"teleport.address=teleport.example.com:443",
	"teleport.identity.secretName=cnpg-teleport-identity",
	"kubeCluster=prod",
}

func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return world.Helm(ctx, t.TempDir(), args...)
}

func setArgs(sets []string) []string {
	var args []string
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return args
}

// render runs helm template with required plus sets and returns the objects.
func render(t *testing.T, sets ...string) []*unstructured.Unstructured {
	t.Helper()
	args := append([]string{"template", release, world.ChartDir(), "--namespace", releaseNS}, setArgs(append(slices.Clone(required), sets...))...)
	out, err := helm(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := world.Manifests(out)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func namespaced(nss ...string) []string {
	s := []string{"rbac.mode=namespaced"}
	if len(nss) > 0 {
		s = append(s, "watchNamespaces={"+strings.Join(nss, ",")+"}")
	}
	return s
}

func TestChartLint(t *testing.T) {
	for name, sets := range map[string][]string{
		"cluster":              nil,
		"namespaced":           namespaced("a", "b"),
		"replicas 3, monitors": {"replicas=3", "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true"},
	} {
		t.Run(name, func(t *testing.T) {
			if out, err := helm(t, append([]string{"lint", "--strict", world.ChartDir()}, setArgs(append(slices.Clone(required), sets...))...)...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestChartSchema: values.schema.json refuses what the controller would
// refuse at start (or what would widen its rights), at install time.
func TestChartSchema(t *testing.T) {
	cases := map[string]struct {
		sets []string
		want string // in helm's error
	}{
		"default values (no Teleport address, identity, kube cluster)": {want: "teleport"},
		"namespaced mode without namespaces":                           {sets: append(slices.Clone(required), namespaced()...), want: "watchNamespaces"},
		"namespaced mode with an empty list":                           {sets: append(slices.Clone(required), "rbac.mode=namespaced", "watchNamespaces=null"), want: "watchNamespaces"},
		"unknown rbac mode":                                            {sets: append(slices.Clone(required), "rbac.mode=none"), want: "rbac.mode"},
		"bad name policy":                                              {sets: append(slices.Clone(required), "namePolicy=free"), want: "namePolicy"},
		"bad resync period":                                            {sets: append(slices.Clone(required), "resyncPeriod=10"), want: "resyncPeriod"},
		"bad log level":                                                {sets: append(slices.Clone(required), "logLevel=verbose"), want: "logLevel"},
		"no workers":                                                   {sets: append(slices.Clone(required), "concurrent=0"), want: "concurrent"},
		"a negative Kubernetes API rate":                               {sets: append(slices.Clone(required), "kubeAPIQPS=-1"), want: "kubeAPIQPS"},
		"an empty namespace":                                           {sets: append(slices.Clone(required), namespaced("a", "")...), want: "watchNamespaces"},
		"misspelt value":                                               {sets: append(slices.Clone(required), "kubeClusterId=x"), want: "kubeClusterId"},
		"negative replicas":                                            {sets: append(slices.Clone(required), "replicas=-1"), want: "replicas"},
		// The Prometheus operator's CRDs take Prometheus durations: no fractions, no ns/us.
		"scrape interval not a Prometheus duration": {sets: append(slices.Clone(required), "metrics.serviceMonitor.interval=1.5m"), want: "serviceMonitor.interval"},
		"alert for not a Prometheus duration":       {sets: append(slices.Clone(required), "metrics.prometheusRule.for=1h30m0.5s"), want: "prometheusRule.for"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			for _, cmd := range []string{"template", "lint"} {
				args := []string{cmd}
				if cmd == "template" {
					args = append(args, release)
				}
				args = append(args, world.ChartDir())
				out, err := helm(t, append(args, setArgs(c.sets)...)...)
				if err == nil {
					t.Fatalf("helm %s accepted it:\n%s", cmd, out)
				}
				if !strings.Contains(err.Error(), c.want) {
					t.Fatalf("helm %s: error does not name %q: %v", cmd, c.want, err)
				}
			}
		})
	}
}

// grant is one (apiGroup, resource, resourceName, verb): a rule expanded,
// so two rule lists compare by what they allow, not how they are written.
type grant struct{ group, resource, name, verb string }

func grants(rules []rbacv1.PolicyRule) map[grant]bool {
	out := map[grant]bool{}
	for _, r := range rules {
		if len(r.NonResourceURLs) > 0 {
			out[grant{resource: "nonResourceURLs"}] = true // never wanted: shows up as a difference
		}
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{"*"}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, n := range names {
					for _, v := range r.Verbs {
						out[grant{g, res, n, v}] = true
					}
				}
			}
		}
	}
	return out
}

func sameGrants(t *testing.T, what string, got, want map[grant]bool) {
	t.Helper()
	var extra, missing []string
	for g := range got {
		if !want[g] {
			extra = append(extra, fmt.Sprint(g))
		}
	}
	for g := range want {
		if !got[g] {
			missing = append(missing, fmt.Sprint(g))
		}
	}
	if len(extra)+len(missing) > 0 {
		t.Errorf("%s: grants more %v, less %v", what, extra, missing)
	}
}

func fileRules(t *testing.T, name string) []rbacv1.PolicyRule {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(world.RepoRoot(), "config", "rbac", name))
	if err != nil {
		t.Fatal(err)
	}
	var r rbacv1.ClusterRole // a Role's rules read the same
	if err := yaml.UnmarshalStrict(raw, &r); err != nil {
		t.Fatal(err)
	}
	return r.Rules
}

// kubeSystem is the one cluster-scoped grant: the kube-system Namespace's UID
// is the default cluster identity.
var kubeSystem = grant{"", "namespaces", "kube-system", "get"}

func without(m map[grant]bool, g grant) map[grant]bool {
	out := map[grant]bool{}
	for k := range m {
		if k != g {
			out[k] = true
		}
	}
	return out
}

// rbacOf is the chart's RBAC: the grants of every Role by namespace ("" for
// ClusterRoles), after checking that each binding binds a rendered role to
// the chart's ServiceAccount only.
func rbacOf(t *testing.T, objs []*unstructured.Unstructured) map[string]map[grant]bool {
	t.Helper()
	roles := map[string][]rbacv1.PolicyRule{} // kind/namespace/name
	bound := map[string]map[grant]bool{}
	var bindings []rbacv1.RoleBinding
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRole", "Role":
			var r rbacv1.Role
			fromUnstructured(t, o, &r)
			roles[o.GetKind()+"/"+o.GetNamespace()+"/"+o.GetName()] = r.Rules
		case "ClusterRoleBinding", "RoleBinding":
			var b rbacv1.RoleBinding
			fromUnstructured(t, o, &b)
			if o.GetKind() == "ClusterRoleBinding" && o.GetNamespace() != "" {
				t.Errorf("ClusterRoleBinding %s has a namespace", o.GetName())
			}
			bindings = append(bindings, b)
		}
	}
	for _, b := range bindings {
		want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: release + "-cnpg-teleport", Namespace: releaseNS}}
		if !slices.Equal(b.Subjects, want) {
			t.Errorf("binding %s/%s: subjects %v, want %v", b.Namespace, b.Name, b.Subjects, want)
		}
		ns := b.Namespace
		key := b.RoleRef.Kind + "/" + ns + "/" + b.RoleRef.Name
		if b.RoleRef.Kind == "ClusterRole" {
			key = "ClusterRole//" + b.RoleRef.Name
		}
		rules, ok := roles[key]
		if !ok {
			t.Errorf("binding %s/%s: %s not rendered", b.Namespace, b.Name, key)
		}
		if bound[ns] == nil {
			bound[ns] = map[grant]bool{}
		}
		for g := range grants(rules) {
			bound[ns][g] = true
		}
	}
	return bound
}

func fromUnstructured(t *testing.T, o *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, into); err != nil {
		t.Fatal(err)
	}
}

func nsSet(m map[string]map[grant]bool) []string {
	var out []string
	for ns := range m {
		out = append(out, ns)
	}
	slices.Sort(out)
	return out
}

// TestChartRBAC: what the chart binds to its ServiceAccount is exactly
// config/rbac/role.yaml (cluster mode), or its namespaced rules in each
// watched namespace plus get on kube-system (namespaced mode), plus the
// leader-election Role in the release's namespace when replicas > 1.
func TestChartRBAC(t *testing.T) {
	role := grants(fileRules(t, "role.yaml"))
	lease := grants(fileRules(t, "leader-election-role.yaml"))
	nsRules := without(role, kubeSystem)
	cases := map[string]struct {
		sets []string
		want map[string]map[grant]bool
	}{
		"cluster":                   {want: map[string]map[grant]bool{"": role}},
		"cluster, watched ns":       {sets: []string{"watchNamespaces={a}"}, want: map[string]map[grant]bool{"": role}},
		"cluster, kubeClusterID":    {sets: []string{"kubeClusterID=c0ffee"}, want: map[string]map[grant]bool{"": nsRules}},
		"cluster, 2 replicas":       {sets: []string{"replicas=2"}, want: map[string]map[grant]bool{"": role, releaseNS: lease}},
		"namespaced":                {sets: namespaced("a", "b"), want: map[string]map[grant]bool{"": {kubeSystem: true}, "a": nsRules, "b": nsRules}},
		"namespaced, kubeClusterID": {sets: append(namespaced("a"), "kubeClusterID=c0ffee"), want: map[string]map[grant]bool{"a": nsRules}},
		"namespaced, 3 replicas, release ns watched": {sets: append(namespaced("a", releaseNS), "replicas=3"),
			want: map[string]map[grant]bool{"": {kubeSystem: true}, "a": nsRules, releaseNS: func() map[grant]bool {
				m := map[grant]bool{}
				for g := range nsRules {
					m[g] = true
				}
				for g := range lease {
					m[g] = true
				}
				return m
			}()}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got := rbacOf(t, render(t, c.sets...))
			if !slices.Equal(nsSet(got), nsSet(c.want)) {
				t.Fatalf("grants in namespaces %q, want %q", nsSet(got), nsSet(c.want))
			}
			for ns, want := range c.want {
				sameGrants(t, fmt.Sprintf("namespace %q", ns), got[ns], want)
			}
			for g := range got[""] {
				if g.resource == "secrets" && strings.Contains(name, "namespaced") {
					t.Errorf("namespaced mode grants cluster-wide %v", g)
				}
			}
		})
	}
}

func deployment(t *testing.T, objs []*unstructured.Unstructured) *appsv1.Deployment {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			var d appsv1.Deployment
			fromUnstructured(t, o, &d)
			return &d
		}
	}
	t.Fatal("no Deployment rendered")
	return nil
}

// TestChartDeployment: the Pod is hardened, probes the health endpoints,
// mounts the identity Secret as a directory (no subPath: renewals arrive),
// and its flags follow the values.
func TestChartDeployment(t *testing.T) {
	d := deployment(t, render(t, namespaced("a", "b")...))
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("containers %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	psc, sc := pod.SecurityContext, c.SecurityContext
	switch {
	case psc == nil || sc == nil:
		t.Fatal("no security context")
	case psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot:
		t.Error("runAsNonRoot not set")
	case psc.SeccompProfile == nil || psc.SeccompProfile.Type != "RuntimeDefault":
		t.Error("seccomp not RuntimeDefault")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("root filesystem writable")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("privilege escalation allowed")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("capabilities %+v", sc.Capabilities)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v", c.Resources)
	}
	for probe, path := range map[string]string{"liveness": "/healthz", "readiness": "/readyz"} {
		p := c.LivenessProbe
		if probe == "readiness" {
			p = c.ReadinessProbe
		}
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "health" {
			t.Errorf("%s probe %+v, want GET %s on port health", probe, p, path)
		}
	}
	args := c.Args
	want := []string{"--teleport-addr=teleport.example.com:443", "--kube-cluster=prod", "--namespaces=a,b",
		"--identity-file=/var/run/cnpg-teleport/identity/identity", "--health-probe-bind-address=:8081", "--metrics-bind-address=:8080",
		"--log-level=info"}
	for _, a := range want {
		if !slices.Contains(args, a) {
			t.Errorf("args %q lack %q", args, a)
		}
	}
	if slices.Contains(args, "--leader-elect") {
		t.Error("--leader-elect with one replica")
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].SubPath != "" || c.VolumeMounts[0].MountPath != "/var/run/cnpg-teleport/identity" {
		t.Errorf("mounts %+v: the identity Secret must be a directory mount (a subPath never updates)", c.VolumeMounts)
	}
	if len(pod.Volumes) != 1 || pod.Volumes[0].Secret == nil || pod.Volumes[0].Secret.SecretName != "cnpg-teleport-identity" {
		t.Errorf("volumes %+v", pod.Volumes)
	}

	// The other flags, and leader election with more than one replica.
	d = deployment(t, render(t, "replicas=2", "labels.env=prod", "labels.team=db", "annotationLabels={tier,env=dev|prod}",
		"namePolicy=any", "clusterDomain=k.internal", "resyncPeriod=2m", "kubeClusterID=c0ffee", "logLevel=debug",
		"concurrent=8", "kubeAPIQPS=100", "kubeAPIBurst=500"))
	for _, a := range []string{"--leader-elect", "--labels=env=prod,team=db", "--annotation-labels=tier,env=dev|prod", "--log-level=debug",
		"--concurrent=8", "--kube-api-qps=100", "--kube-api-burst=500",
		"--name-policy=any", "--cluster-domain=k.internal", "--resync-period=2m", "--kube-cluster-id=c0ffee"} {
		if !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, a) {
			t.Errorf("args %q lack %q", d.Spec.Template.Spec.Containers[0].Args, a)
		}
	}
	if slices.ContainsFunc(d.Spec.Template.Spec.Containers[0].Args, func(a string) bool { return strings.HasPrefix(a, "--namespaces") }) {
		t.Error("--namespaces without watchNamespaces")
	}
}
