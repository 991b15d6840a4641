package world

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CNPGNamespace is where the world's CNPG operator runs.
const CNPGNamespace = "cnpg-system"

// kcmControllers are the kube-controller-manager loops the world runs: what
// makes owner references, namespace deletion, Jobs and Deployments work.
var kcmControllers = []string{
	"garbagecollector", "namespace", "job", "deployment", "replicaset", "serviceaccount", "pvc-protection",
}

func (w *World) startKubeControllerManager(ctx context.Context) error {
	dir, err := ToolDir("kube-apiserver")
	if err != nil {
		return err
	}
	p, err := StartProcess(w.Dir, "kube-controller-manager", []string{w.marker}, filepath.Join(dir, "kube-controller-manager"),
		"--kubeconfig="+w.Kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--use-service-account-credentials=false", "--controllers="+strings.Join(kcmControllers, ","))
	if err != nil {
		return err
	}
	w.kcm = p
	// Up when its serviceaccount controller has made the default namespace's account.
	return waitFor(90*time.Second, 100*time.Millisecond, func() error {
		if done, err := p.Exited(); done {
			return fmt.Errorf("kube-controller-manager exited: %w\n%s", err, p.Tail(4<<10))
		}
		return w.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "default"}, &corev1.ServiceAccount{})
	})
}

// startCNPG runs CNPG's operator (`manager controller`) outside a Pod: its
// webhooks are registered with the apiserver (envtest), serving on the
// certificate envtest made for them.
func (w *World) startCNPG(ctx context.Context) error {
	bin, err := cnpgManager()
	if err != nil {
		return err
	}
	dir := filepath.Join(w.Dir, "cnpg-operator")
	for _, d := range []string{"operator", "webhook"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	// The operator detects its architectures by globbing operator/manager_*
	// relative to its working directory.
	if err := os.Symlink(bin, filepath.Join(dir, "operator", "manager_"+runtime.GOARCH)); err != nil {
		return err
	}
	wh := w.Env.WebhookInstallOptions
	for src, dst := range map[string]string{"tls.crt": "apiserver.crt", "tls.key": "apiserver.key"} {
		raw, err := os.ReadFile(filepath.Join(wh.LocalServingCertDir, src))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "webhook", dst), raw, 0o600); err != nil {
			return err
		}
	}
	if err := w.Namespace(ctx, CNPGNamespace); err != nil {
		return err
	}
	// WEBHOOK_CERT_DIR: certificates are provided (OLM's mode), so the
	// operator does not wait for a Secret mounted by a kubelet.
	// POSTGRES_IMAGE_NAME: the operator's default image (an operator setting,
	// as in CNPG's ConfigMap) is the host's PostgreSQL, so a Cluster written
	// without spec.imageName, as a user writes one, runs in the world too.
	env := append(os.Environ(), w.marker, "KUBECONFIG="+w.Kubeconfig, "OPERATOR_NAMESPACE="+CNPGNamespace,
		"WEBHOOK_CERT_DIR="+filepath.Join(dir, "webhook"), "POSTGRES_IMAGE_NAME="+PostgresImage())
	p, err := startProcessIn(dir, w.Dir, "cnpg-operator", env, []string{bin, "controller",
		fmt.Sprintf("--webhook-port=%d", wh.LocalServingPort), "--metrics-bind-address=0"})
	if err != nil {
		return err
	}
	w.cnpg = p
	// Ready when CNPG's own webhook rejects a Cluster the schema accepts.
	return waitFor(90*time.Second, 100*time.Millisecond, func() error {
		if done, err := p.Exited(); done {
			return fmt.Errorf("cnpg operator exited: %w\n%s", err, p.Tail(4<<10))
		}
		probe := NewCluster("default", "webhook-probe", 1)
		probe.Spec.PostgresConfiguration.Parameters = map[string]string{"port": "5433"}
		err := w.Client.Create(ctx, probe, client.DryRunAll)
		if err == nil {
			return fmt.Errorf("cnpg webhook not answering: a fixed parameter was accepted")
		}
		if !strings.Contains(err.Error(), "Can't set fixed configuration parameter") {
			return err
		}
		return nil
	})
}

func cnpgManager() (string, error) {
	dir, err := ToolDir("cnpg")
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "manager"), nil
}

func pgbouncerBin() (string, error) {
	dir, err := ToolDir("pgbouncer")
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "pgbouncer"), nil
}

// PostgresImage is the CNPG image name that the world's kubelet runs with
// the host's PostgreSQL (it names the host's major version).
func PostgresImage() string {
	dir, err := PostgresBinDir()
	if err != nil {
		return "ghcr.io/cloudnative-pg/postgresql:missing"
	}
	return "ghcr.io/cloudnative-pg/postgresql:" + filepath.Base(filepath.Dir(dir))
}

// NewCluster is a minimal CNPG Cluster the world can run.
func NewCluster(namespace, name string, instances int) *cnpgv1.Cluster {
	return &cnpgv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: cnpgv1.ClusterSpec{
			Instances:            instances,
			ImageName:            PostgresImage(),
			StorageConfiguration: cnpgv1.StorageConfiguration{Size: "1Gi"},
		},
	}
}

// WaitClusterHealthy waits until CNPG reports the Cluster healthy with all
// its instances ready, and returns it.
func (w *World) WaitClusterHealthy(ctx context.Context, namespace, name string, timeout time.Duration) (*cnpgv1.Cluster, error) {
	var c cnpgv1.Cluster
	err := waitFor(timeout, 200*time.Millisecond, func() error {
		if err := w.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &c); err != nil {
			return err
		}
		if c.Status.Phase != cnpgv1.PhaseHealthy || c.Status.ReadyInstances != c.Spec.Instances {
			return fmt.Errorf("cluster %s/%s: phase %q (%s), %d/%d ready", namespace, name, c.Status.Phase, c.Status.PhaseReason,
				c.Status.ReadyInstances, c.Spec.Instances)
		}
		return nil
	})
	return &c, err
}

// RestartClusterPod deletes the Pod name of a Cluster and waits until CNPG
// has brought a new one (another UID) up Ready and reports the Cluster
// healthy again, which it returns: the Cluster can start on what it has.
func (w *World) RestartClusterPod(ctx context.Context, namespace, cluster, pod string, timeout time.Duration) (*cnpgv1.Cluster, error) {
	var old corev1.Pod
	if err := w.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: pod}, &old); err != nil {
		return nil, err
	}
	if err := w.Client.Delete(ctx, &old); err != nil {
		return nil, err
	}
	err := waitFor(timeout, 200*time.Millisecond, func() error {
		var p corev1.Pod
		if err := w.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: pod}, &p); err != nil {
			return err
		}
		if p.UID == old.UID {
			return fmt.Errorf("pod %s/%s: still the deleted one", namespace, pod)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("pod %s/%s: not Ready", namespace, pod)
	})
	if err != nil {
		return nil, err
	}
	return w.WaitClusterHealthy(ctx, namespace, cluster, timeout)
}
