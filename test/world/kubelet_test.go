package world

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pod(ns, name, ip string, ready bool, lbls map[string]string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls}}
	p.Status.PodIP = ip
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
	return p
}

func svc(ns, name string, sel map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Selector: sel}}
}

// TestServiceEntries: a Service name resolves only to a ready, live Pod its
// selector matches in its own namespace; the first by name wins.
func TestServiceEntries(t *testing.T) {
	primary := map[string]string{"cnpg.io/cluster": "pg", "cnpg.io/instanceRole": "primary"}
	replica := map[string]string{"cnpg.io/cluster": "pg", "cnpg.io/instanceRole": "replica"}
	gone := pod("a", "pg-0", "10.0.0.9", true, primary)
	gone.DeletionTimestamp = &metav1.Time{}
	pods := []*corev1.Pod{
		pod("a", "pg-2", "10.0.0.2", true, replica),
		pod("a", "pg-1", "10.0.0.1", true, primary),
		pod("a", "pg-3", "10.0.0.3", true, replica),
		pod("a", "pg-15", "10.0.0.4", false, replica), // sorts before pg-2: skipped only as not ready
		pod("b", "pg-1", "10.0.1.1", true, primary),
		gone,
	}
	got := serviceEntries([]*corev1.Service{
		svc("a", "pg-rw", map[string]string{"cnpg.io/cluster": "pg", "cnpg.io/instanceRole": "primary"}),
		svc("a", "pg-ro", map[string]string{"cnpg.io/cluster": "pg", "cnpg.io/instanceRole": "replica"}),
		svc("a", "pg-none", map[string]string{"cnpg.io/cluster": "other"}),
		svc("a", "headless", nil),
		svc("b", "pg-rw", map[string]string{"cnpg.io/cluster": "pg", "cnpg.io/instanceRole": "primary"}),
	}, pods)
	want := []hostEntry{{"a", "pg-ro", "10.0.0.2"}, {"a", "pg-rw", "10.0.0.1"}, {"b", "pg-rw", "10.0.1.1"}}
	if len(got) != len(want) {
		t.Fatalf("entries %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %v, want %v", i, got[i], want[i])
		}
	}
	if pods[0].Name != "pg-2" {
		t.Error("serviceEntries reordered its caller's slice")
	}
}

// TestRenderHosts: short names only inside their own namespace.
func TestRenderHosts(t *testing.T) {
	e := []hostEntry{{"a", "pg-rw", "10.0.0.1"}, {"b", "pg-rw", "10.0.1.1"}}
	world := renderHosts(e, "")
	if !strings.Contains(world, "10.0.0.1 pg-rw.a pg-rw.a.svc pg-rw.a.svc.cluster.local\n") || strings.Contains(world, " pg-rw ") {
		t.Fatalf("world hosts:\n%s", world)
	}
	inA := renderHosts(e, "a")
	if !strings.Contains(inA, "10.0.0.1 pg-rw pg-rw.a ") || !strings.Contains(inA, "10.0.1.1 pg-rw.b ") {
		t.Fatalf("hosts in a:\n%s", inA)
	}
	if !strings.HasPrefix(inA, hostsHeader) {
		t.Fatal("no localhost header")
	}
}

// TestPodStatus: the phase and readiness a kubelet reports.
func TestPodStatus(t *testing.T) {
	mk := func(policy corev1.RestartPolicy) (*podWorker, *corev1.Pod) {
		p := &corev1.Pod{Spec: corev1.PodSpec{
			RestartPolicy:  policy,
			InitContainers: []corev1.Container{{Name: "init"}},
			Containers:     []corev1.Container{{Name: "main"}},
		}}
		return newPodWorker(&Kubelet{}, p), p
	}
	done := func(code int32) *corev1.ContainerStateTerminated {
		return &corev1.ContainerStateTerminated{ExitCode: code}
	}
	sb := &sandbox{ip: "10.0.0.7"}
	cases := []struct {
		name   string
		policy corev1.RestartPolicy
		set    func(w *podWorker, p *corev1.Pod)
		phase  corev1.PodPhase
		ready  bool
	}{
		{"nothing ran yet", corev1.RestartPolicyAlways, func(*podWorker, *corev1.Pod) {}, corev1.PodPending, false},
		{"init done, main up, not ready", corev1.RestartPolicyAlways, func(w *podWorker, p *corev1.Pod) {
			w.initDone = true
			w.state(p.Spec.InitContainers[0], true).last = done(0)
		}, corev1.PodRunning, false},
		{"main ready", corev1.RestartPolicyAlways, func(w *podWorker, p *corev1.Pod) {
			w.initDone = true
			w.state(p.Spec.Containers[0], false).ready = true
		}, corev1.PodRunning, true},
		{"job done", corev1.RestartPolicyNever, func(w *podWorker, p *corev1.Pod) {
			w.initDone = true
			w.state(p.Spec.Containers[0], false).last = done(0)
		}, corev1.PodSucceeded, false},
		{"job failed", corev1.RestartPolicyNever, func(w *podWorker, p *corev1.Pod) {
			w.initDone = true
			w.state(p.Spec.Containers[0], false).last = done(2)
		}, corev1.PodFailed, false},
		{"init failed, never restarted", corev1.RestartPolicyNever, func(w *podWorker, p *corev1.Pod) {
			w.state(p.Spec.InitContainers[0], true).last = done(1)
		}, corev1.PodFailed, false},
		{"init failed, OnFailure retries", corev1.RestartPolicyOnFailure, func(w *podWorker, p *corev1.Pod) {
			w.state(p.Spec.InitContainers[0], true).last = done(1)
		}, corev1.PodPending, false},
	}
	for _, c := range cases {
		w, p := mk(c.policy)
		c.set(w, p)
		st := w.podStatus(p, sb)
		if st.Phase != c.phase {
			t.Errorf("%s: phase %s, want %s", c.name, st.Phase, c.phase)
		}
		ready := false
		for _, cond := range st.Conditions {
			if cond.Type == corev1.PodReady {
				ready = cond.Status == corev1.ConditionTrue
			}
		}
		if ready != c.ready {
			t.Errorf("%s: ready %v, want %v", c.name, ready, c.ready)
		}
		if st.PodIP != "10.0.0.7" {
			t.Errorf("%s: podIP %q", c.name, st.PodIP)
		}
	}
}

func TestExpandAndImages(t *testing.T) {
	got := expand([]string{"run", "--pod=$(POD_NAME)", "$(MISSING)"}, map[string]string{"POD_NAME": "pg-1"})
	if strings.Join(got, " ") != "run --pod=pg-1 $(MISSING)" {
		t.Errorf("expand: %v", got)
	}
	if _, err := imagePath("ghcr.io/cloudnative-pg/postgresql:1"); err == nil {
		t.Error("an image naming a PostgreSQL major the host lacks must not run")
	}
	if p, err := imagePath("ghcr.io/cloudnative-pg/cloudnative-pg:1.30.0"); err != nil || !strings.Contains(p, "/usr/bin") {
		t.Errorf("operator image: %q, %v", p, err)
	}
}

func TestControllerImage(t *testing.T) {
	for image, want := range map[string]bool{
		"ghcr.io/cnpg-teleport/cnpg-teleport":                 true,
		"ghcr.io/cnpg-teleport/cnpg-teleport:0.1.0":           true,
		"ghcr.io/cnpg-teleport/cnpg-teleport@sha256:0123abcd": true,
		"ghcr.io/cnpg-teleport/cnpg-teleport-x:0.1.0":         false,
		"localhost:5000/cnpg-teleport:0.1.0":                  false,
		"ghcr.io/cloudnative-pg/cloudnative-pg:1.30.0":        false,
	} {
		if IsControllerImage(image) != want {
			t.Errorf("IsControllerImage(%q) = %v", image, !want)
		}
	}
	c := corev1.Container{Image: ControllerImage + ":v1", Args: []string{"--x"}}
	if got := strings.Join(entrypoint(c), " "); got != "/cnpg-teleport --x" {
		t.Errorf("the controller image's entrypoint then its args: %q", got)
	}
	c.Command = []string{"/bin/true"}
	if got := strings.Join(entrypoint(c), " "); got != "/bin/true --x" {
		t.Errorf("a command replaces the entrypoint: %q", got)
	}
	// The chart's default image is the one the world runs.
	raw, err := os.ReadFile(filepath.Join(RepoRoot(), "charts", "cnpg-teleport", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "repository: "+ControllerImage+"\n") {
		t.Errorf("charts/cnpg-teleport/values.yaml's image.repository is not %s", ControllerImage)
	}
}

func TestWriteKeys(t *testing.T) {
	dir := t.TempDir()
	data := map[string][]byte{"tls.crt": []byte("c"), "tls.key": []byte("k")}
	if err := writeKeys(filepath.Join(dir, "all"), data, nil); err != nil {
		t.Fatal(err)
	}
	if err := writeKeys(filepath.Join(dir, "some"), data, []corev1.KeyToPath{{Key: "tls.crt", Path: "../../escape/ca.crt"}}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"all/tls.crt": "c", "all/tls.key": "k", "some/escape/ca.crt": "c"} {
		if b, err := os.ReadFile(filepath.Join(dir, path)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v", path, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "some", "tls.key")); err == nil {
		t.Error("items given: only those keys")
	}
}
