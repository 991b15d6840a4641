package main

import (
	"bytes"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNamespaces(t *testing.T) {
	if got, err := namespaces(""); err != nil || got != nil {
		t.Fatalf("empty: %v %v", got, err)
	}
	if got, err := namespaces("a, b"); err != nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("a, b: %v %v", got, err)
	}
	for _, bad := range []string{"a,", ",", "a,,b"} {
		if _, err := namespaces(bad); err == nil {
			t.Errorf("%q: a stray comma must not mean all namespaces", bad)
		}
	}
}

func TestStripCached(t *testing.T) {
	mf := []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	secret := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "s", ManagedFields: mf,
		Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"data":{"password":"c2VjcmV0"}}`}}}
	if _, err := stripCached(secret); err != nil || secret.Annotations != nil || secret.ManagedFields != nil {
		t.Fatalf("Secret metadata keeps %v %v", secret.Annotations, secret.ManagedFields)
	}
	c := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"cnpg-teleport.io/register": "true"}, ManagedFields: mf}}
	c.Status.Certificates.ClientCASecret, c.Status.SecretsResourceVersion.ClientCASecretVersion = "pg-teleport-ca", "42"
	c.Status.Phase, c.Status.InstanceNames, c.Status.ReadyInstances = "Cluster in healthy state", []string{"pg-1", "pg-2"}, 1
	c.Status.InstancesStatus = map[cnpgv1.PodStatus][]string{cnpgv1.PodHealthy: {"pg-1"}, cnpgv1.PodReplicating: {"pg-2"}}
	if _, err := stripCached(c); err != nil || c.Annotations["cnpg-teleport.io/register"] != "true" || c.ManagedFields != nil {
		t.Fatalf("a Cluster must keep its annotations (the controller reads them), lose managedFields: %v %v", c.Annotations, c.ManagedFields)
	}
	if c.Status.Certificates.ClientCASecret != "pg-teleport-ca" || c.Status.SecretsResourceVersion.ClientCASecretVersion != "42" {
		t.Fatalf("a Cluster must keep the certificates CNPG reports (the registration waits on them): %+v", c.Status)
	}
	if got := c.Status.InstancesStatus[cnpgv1.PodReplicating]; len(got) != 1 || got[0] != "pg-2" {
		t.Fatalf("a Cluster must keep which instances are starting (the trust switch waits for them): %+v", c.Status)
	}
	if c.Status.Phase != "" || c.Status.InstanceNames != nil || c.Status.ReadyInstances != 0 {
		t.Fatalf("the rest of a Cluster's status is never read and must not be cached: %+v", c.Status)
	}
}

func TestVersionFlag(t *testing.T) {
	f, err := parseFlags([]string{"--version"})
	if err != nil || !f.version {
		t.Fatalf("--version alone must parse (no other flag needed): %+v %v", f, err)
	}
	if _, err := parseFlags(nil); err == nil {
		t.Fatal("without --version the required flags are still required")
	}
	version = "v9.9.9-test"
	defer func() { version = "" }()
	if got := versionString(); got != "v9.9.9-test" {
		t.Fatalf("-X main.version not used: %q", got)
	}
}

func TestLogLevelFlag(t *testing.T) {
	required := []string{"--teleport-addr=t:3025", "--kube-cluster=k", "--identity-file=/i"}
	lines := func(level ...string) string {
		f, err := parseFlags(append(required, level...))
		if err != nil {
			t.Fatalf("%v: %v", level, err)
		}
		var b bytes.Buffer
		l := newLogger(f, &b)
		l.V(1).Info("debug line")
		l.Info("info line")
		l.Error(nil, "error line")
		return b.String()
	}
	for _, tt := range []struct {
		flag       []string
		want, hide []string
	}{
		{nil, []string{"info line", "error line"}, []string{"debug line"}},
		{[]string{"--log-level=debug"}, []string{"debug line", "info line", "error line"}, nil},
		{[]string{"--log-level=error"}, []string{"error line"}, []string{"debug line", "info line"}},
	} {
		out := lines(tt.flag...)
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: %q not logged:\n%s", tt.flag, w, out)
			}
		}
		for _, h := range tt.hide {
			if strings.Contains(out, h) {
				t.Errorf("%v: %q logged:\n%s", tt.flag, h, out)
			}
		}
	}
	for _, bad := range []string{"verbose", "INFO", ""} {
		if _, err := parseFlags(append(required, "--log-level="+bad)); err == nil {
			t.Errorf("--log-level=%q accepted", bad)
		}
	}
}

func TestKubeAPIRateFlags(t *testing.T) {
	required := []string{"--teleport-addr=t:3025", "--kube-cluster=k", "--identity-file=/i"}
	f, err := parseFlags(required)
	if err != nil || f.kubeQPS != 0 || f.concurrent != 4 {
		t.Fatalf("defaults: qps %v (want 0: no client-side limit, as controller-runtime), concurrent %d, %v", f.kubeQPS, f.concurrent, err)
	}
	for _, bad := range [][]string{{"--kube-api-qps=-1"}, {"--kube-api-burst=0"}, {"--concurrent=0"}} {
		if _, err := parseFlags(append(slices.Clone(required), bad...)); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestGCPercent: GOGC is 50 unless the environment sets it.
func TestGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	setGCPercent(func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Fatalf("GOGC unset: %d, want %d", got, gcPercent)
	}
	setGCPercent(func(k string) string {
		if k == "GOGC" {
			return "200"
		}
		return ""
	})
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GOGC set: changed to %d", got)
	}
}
