package world

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"
)

const (
	cnpgModule        = "github.com/cloudnative-pg/cloudnative-pg"
	certManagerModule = "github.com/cert-manager/cert-manager"
)

// World is the Kubernetes half of the test world: a real kube-apiserver and
// etcd (envtest) serving the real CNPG and cert-manager CRDs of the pinned
// modules, the real kube-controller-manager, the real cert-manager
// controller, the real CNPG operator with its webhooks, and a kubelet (see
// Kubelet) that runs the Pods CNPG asks for: CNPG's instance manager with the
// host's PostgreSQL, and PgBouncer.
type World struct {
	Dir        string
	Env        *envtest.Environment
	Config     *rest.Config
	Client     client.Client
	Scheme     *runtime.Scheme
	Kubeconfig string // admin kubeconfig file (group system:masters)
	Kubelet    *Kubelet

	certManager *Process
	kcm, cnpg   *Process
	procs       []*Process
	logs        []string
	marker      string // NAME=VALUE in the environment of every process the world starts
	stopOnce    sync.Once
}

// Options tune the world.
type Options struct {
	// APIServerArgs are appended to kube-apiserver's flags (e.g. an audit log).
	APIServerArgs map[string]string
	// MonitoringCRDs also installs the Prometheus operator's ServiceMonitor
	// and PrometheusRule CRDs (see MonitoringCRDs), for the chart's optional
	// monitoring objects; the operator itself does not run.
	MonitoringCRDs bool
	// ControlPlaneOnly starts the apiserver and etcd with the CRDs and
	// nothing else: no webhooks, kube-controller-manager, cert-manager, CNPG
	// operator or kubelet (make bench: 1,000 Clusters no CNPG here could run).
	ControlPlaneOnly bool
}

// Scheme returns a scheme with Kubernetes, CNPG and cert-manager types.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, cnpgv1.AddToScheme, cmapi.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// CRDDirs are the CRD directories of the pinned CNPG and cert-manager modules.
func CRDDirs() ([]string, error) {
	var dirs []string
	for _, m := range []struct{ module, sub string }{
		{cnpgModule, "config/crd/bases"},
		{certManagerModule, "deploy/crds"},
	} {
		d := os.Getenv(moduleEnv(m.module))
		if d == "" {
			var err error
			if d, err = moduleDir(m.module); err != nil {
				return nil, err
			}
		}
		dirs = append(dirs, filepath.Join(d, m.sub))
	}
	return dirs, nil
}

// monitoringCRDFiles are the CRDs of the Prometheus operator the chart can make objects of.
var monitoringCRDFiles = []string{"monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml"}

// MonitoringCRDs are the ServiceMonitor and PrometheusRule CRD files of the
// Prometheus operator at the version hack/tools.sh pins (read from its module:
// the project's go.mod does not require it). Only these two: the operator's
// other CRDs (Prometheus, Alertmanager...) are large and nothing here uses them.
func MonitoringCRDs() ([]string, error) {
	dir, err := ToolDir("monitoring-crds")
	if err != nil {
		return nil, err
	}
	var files []string
	for _, f := range monitoringCRDFiles {
		files = append(files, filepath.Join(dir, f))
	}
	return files, nil
}

// Start starts the world for one test; it is stopped when the test ends, and
// on failure the tail of every process log is printed.
func Start(t testing.TB, opts Options) *World {
	t.Helper()
	t0 := time.Now()
	w, err := StartWorld(t.TempDir(), opts)
	if err == nil {
		t.Logf("world started in %s", time.Since(t0).Round(10*time.Millisecond))
	}
	t.Cleanup(func() {
		if w != nil && t.Failed() {
			t.Log(w.Logs())
		}
		if w != nil {
			w.Stop()
			CheckRaces(t, w.Dir)
		}
	})
	if err != nil {
		t.Fatalf("world: %v", err)
	}
	return w
}

// StartWorld starts the apiserver, etcd, kube-controller-manager,
// cert-manager, the CNPG operator and the kubelet, with logs in dir. It must
// run inside the world's namespace (Main or Enter). The caller must Stop it;
// on error the partly started world is returned.
func StartWorld(dir string, opts Options) (*World, error) {
	if !Inside() {
		return nil, fmt.Errorf("world: StartWorld needs the world's namespace (call world.Main from TestMain)")
	}
	ctx := context.Background()
	ctrllog.SetLogger(logr.Discard()) // envtest's own progress lines
	crdDirs, err := CRDDirs()
	if err != nil {
		return nil, err
	}
	if opts.MonitoringCRDs {
		files, err := MonitoringCRDs()
		if err != nil {
			return nil, err
		}
		crdDirs = append(crdDirs, files...) // envtest takes files as well as directories
	}
	apiDir, err := ToolDir("kube-apiserver")
	if err != nil {
		return nil, err
	}
	etcdDir, err := ToolDir("etcd")
	if err != nil {
		return nil, err
	}
	cnpgDir, err := cnpgModuleDir()
	if err != nil {
		return nil, err
	}
	w := &World{Dir: dir, Scheme: Scheme(), marker: envWorldID + "=" + randomHex(8)}
	apiLog, err := os.Create(filepath.Join(dir, "kube-apiserver.log"))
	if err != nil {
		return nil, err
	}
	etcdLog, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, err
	}
	w.logs = append(w.logs, apiLog.Name(), etcdLog.Name())
	api := &envtest.APIServer{Path: filepath.Join(apiDir, "kube-apiserver"), Out: apiLog, Err: apiLog}
	// Pods reach the apiserver from their own network namespaces, on the
	// world's address. One world runs at a time in a namespace: a fixed port.
	api.Address, api.Port = WorldAddr, "6443"
	api.Configure().Set("advertise-address", WorldAddr)
	api.Configure().Set("endpoint-reconciler-type", "none")
	for k, v := range opts.APIServerArgs {
		api.Configure().Set(k, v)
	}
	// CNPG's own validating and mutating webhooks, served by its operator.
	webhooks := envtest.WebhookInstallOptions{
		Paths:            []string{filepath.Join(cnpgDir, "config", "webhook", "manifests.yaml")},
		LocalServingHost: "127.0.0.1",
	}
	if opts.ControlPlaneOnly {
		webhooks = envtest.WebhookInstallOptions{}
	}
	w.Env = &envtest.Environment{
		ControlPlane: envtest.ControlPlane{
			APIServer: api,
			Etcd:      &envtest.Etcd{Path: filepath.Join(etcdDir, "etcd"), Out: etcdLog, Err: etcdLog},
		},
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: true,
		WebhookInstallOptions: webhooks,
		// A loaded 2-core machine (a cold build beside the tests) starts slowly.
		ControlPlaneStartTimeout: 90 * time.Second,
		Scheme:                   w.Scheme,
	}
	if w.Config, err = w.Env.Start(); err != nil {
		return w, fmt.Errorf("envtest: %w", err)
	}
	if w.Client, err = client.New(w.Config, client.Options{Scheme: w.Scheme}); err != nil {
		return w, err
	}
	if w.Kubeconfig, err = w.writeKubeconfig("admin", []string{"system:masters"}); err != nil {
		return w, err
	}
	if opts.ControlPlaneOnly {
		return w, nil
	}
	if err := w.startKubeControllerManager(ctx); err != nil {
		return w, err
	}
	if err := w.startCertManager(); err != nil {
		return w, err
	}
	if err := w.startCNPG(ctx); err != nil {
		return w, err
	}
	manager, err := cnpgManager()
	if err != nil {
		return w, err
	}
	pgb, err := pgbouncerBin()
	if err != nil {
		return w, err
	}
	if w.Kubelet, err = startKubelet(w.Config, dir, sandboxBins{manager: manager, pgbouncer: pgb}, w.marker); err != nil {
		return w, err
	}
	return w, nil
}

// envWorldID marks every process a world starts, so that a test can prove
// none is left running after Stop (see LeftRunning).
const envWorldID = "CNPG_TELEPORT_WORLD_ID"

func cnpgModuleDir() (string, error) {
	if d := os.Getenv(moduleEnv(cnpgModule)); d != "" {
		return d, nil
	}
	return moduleDir(cnpgModule)
}

// UserKubeconfig writes a kubeconfig for a client-certificate user of the
// apiserver, so its requests are attributable in an audit log.
func (w *World) UserKubeconfig(name string, groups ...string) (string, error) {
	return w.writeKubeconfig(name, groups)
}

func (w *World) writeKubeconfig(name string, groups []string) (string, error) {
	u, err := w.Env.ControlPlane.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return "", fmt.Errorf("add user %s: %w", name, err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return "", err
	}
	p := filepath.Join(w.Dir, name+".kubeconfig")
	return p, os.WriteFile(p, kc, 0o600)
}

func (w *World) startCertManager() error {
	bin, err := CertManagerBin()
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := w.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cert-manager"}}); err != nil {
		return err
	}
	w.certManager, err = StartProcess(w.Dir, "cert-manager", []string{w.marker}, bin, "--kubeconfig", w.Kubeconfig)
	if err != nil {
		return err
	}
	w.procs = append(w.procs, w.certManager)
	return nil
}

// Adopt hands a process to the world: stopped with it, its log printed with it.
func (w *World) Adopt(p *Process) { w.procs = append(w.procs, p) }

// Stop stops every process the world started, by PID: first the operators
// (so nothing is recreated), then every Pod's containers, then the rest
// newest first, then the apiserver and etcd.
func (w *World) Stop() { w.stopOnce.Do(w.stop) }

func (w *World) stop() {
	for _, p := range []*Process{w.cnpg, w.kcm} {
		if p != nil {
			p.Stop()
		}
	}
	if w.Kubelet != nil {
		w.Kubelet.Stop()
	}
	for i := len(w.procs) - 1; i >= 0; i-- {
		w.procs[i].Stop()
	}
	if w.Env != nil && w.Env.ControlPlane.APIServer != nil {
		_ = w.Env.Stop()
	}
}

// LeftRunning lists the processes (pid and command line) that carry this
// world's marker: after Stop there must be none.
func (w *World) LeftRunning() []string {
	entries, _ := os.ReadDir("/proc")
	var left []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, append([]byte(w.marker), 0)) {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		left = append(left, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(string(bytes.TrimRight(cmd, "\x00")), "\x00", " ")))
	}
	return left
}

// Logs returns the tail of every log of the world.
// Logs returns the tail of every log of the world: its processes, the
// kubelet, and each container the kubelet ran (shorter tails).
func (w *World) Logs() string {
	var b strings.Builder
	paths := append([]string(nil), w.logs...)
	for _, p := range append([]*Process{w.kcm, w.cnpg}, w.procs...) {
		if p != nil {
			paths = append(paths, p.LogPath)
		}
	}
	paths = append(paths, filepath.Join(w.Dir, "kubelet.log"))
	for _, p := range paths {
		fmt.Fprintf(&b, "\n===== %s (tail) =====\n%s\n", p, tailFile(p, 8<<10))
	}
	if w.Kubelet != nil {
		for _, p := range w.Kubelet.containerLogs() {
			fmt.Fprintf(&b, "\n===== %s (tail) =====\n%s\n", p, tailFile(p, 2<<10))
		}
	}
	return b.String()
}

// Namespace creates a namespace.
func (w *World) Namespace(ctx context.Context, name string) error {
	return w.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
}

// Eventually polls check every 100 ms until it returns nil, or fails the test.
func Eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	if err := waitFor(timeout, 100*time.Millisecond, check); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// StartController runs the cnpg-teleport binary against the world's
// apiserver (admin kubeconfig) with the given flags. Its log is named name.
func (w *World) StartController(name string, args ...string) (*Process, error) {
	return w.StartControllerAs(name, w.Kubeconfig, args...)
}

// StartControllerAs is StartController with another kubeconfig.
func (w *World) StartControllerAs(name, kubeconfig string, args ...string) (*Process, error) {
	bin, err := ControllerBin()
	if err != nil {
		return nil, err
	}
	p, err := StartProcess(w.Dir, name, []string{"KUBECONFIG=" + kubeconfig, w.marker}, append([]string{bin}, args...)...)
	if err != nil {
		return nil, err
	}
	w.Adopt(p)
	return p, nil
}

// ApplyClusterRole creates the ClusterRole in file (YAML) and binds it to user.
func (w *World) ApplyClusterRole(ctx context.Context, file, user string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var role rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(raw, &role); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := w.Client.Create(ctx, &role); err != nil {
		return err
	}
	return w.Client.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name + "-" + user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	})
}

// ContainerLog returns the tail of a container's log (every run of it: a
// restarted container appends), as the world's kubelet wrote it.
func (w *World) ContainerLog(namespace, pod, container string) string {
	return tailFile(filepath.Join(w.Dir, fmt.Sprintf("%s_%s_%s.log", namespace, pod, container)), 8<<10)
}
