// Command cnpg-teleport registers annotated CloudNativePG Clusters as
// Teleport db resources (verify-full), and removes them when the Cluster is
// deleted or opts out.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport"
)

// flags are the controller's command line.
type flags struct {
	teleportAddr   string
	identityFile   string
	botDir         string
	reload         time.Duration
	kubeCluster    string
	labels         string
	domain         string
	namespaces     string
	resync         time.Duration
	noAgentAfter   time.Duration
	kubeClusterID  string
	annLabels      string
	namePolicy     string
	metricsAddr    string
	probeAddr      string
	leaderElection bool
	leaderNS       string
	concurrent     int
	pprofAddr      string
	kubeQPS        float64
	kubeBurst      int
	logLevel       zapcore.Level
	version        bool
}

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("cnpg-teleport", flag.ContinueOnError)
	fs.StringVar(&f.teleportAddr, "teleport-addr", "", "Teleport auth or proxy address (host:port)")
	fs.StringVar(&f.identityFile, "identity-file", "", "Teleport identity file (tctl auth sign --format=file)")
	fs.StringVar(&f.botDir, "tbot-dir", "", "tbot directory destination (holds 'identity'); renewals are picked up without restart")
	fs.DurationVar(&f.reload, "identity-reload-interval", time.Minute, "how often the identity files are checked for renewal")
	fs.StringVar(&f.kubeCluster, "kube-cluster", "", "name of this Kubernetes cluster (in db names and ownership labels; unique per Teleport)")
	fs.StringVar(&f.kubeClusterID, "kube-cluster-id", "", "stable identity of this Kubernetes cluster in ownership labels (default: the kube-system namespace UID)")
	fs.StringVar(&f.labels, "labels", "", "static labels for every db resource, k=v,k2=v2")
	fs.StringVar(&f.annLabels, "annotation-labels", "", "label keys the cnpg-teleport.io/labels annotation may set, key or key=v1|v2, comma-separated (default: none: labels decide access in Teleport)")
	fs.StringVar(&f.namePolicy, "name-policy", "namespace", "what cnpg-teleport.io/name may be: namespace (the Cluster's namespace or <namespace>-...) or any")
	fs.StringVar(&f.domain, "cluster-domain", "cluster.local", "Kubernetes cluster DNS domain")
	fs.StringVar(&f.namespaces, "namespaces", "", "comma-separated namespaces to watch (default: all)")
	fs.DurationVar(&f.resync, "resync-period", 10*time.Minute, "how often registrations are compared with Teleport and orphans collected")
	fs.DurationVar(&f.noAgentAfter, "no-agent-after", 30*time.Second, "a Warning NoAgent when no Teleport database agent has served a registered db resource for this long (0: no check)")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "Prometheus metrics address ('0' disables)")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "health probe address")
	fs.BoolVar(&f.leaderElection, "leader-elect", false, "enable leader election (for more than one replica)")
	fs.StringVar(&f.leaderNS, "leader-election-namespace", "", "namespace of the leader election Lease (default: the Pod's own; required outside a Pod)")
	fs.IntVar(&f.concurrent, "concurrent", 4, "how many Clusters are reconciled at once")
	fs.StringVar(&f.pprofAddr, "pprof-bind-address", "", "Go's pprof profiles on this address (default: off)")
	fs.Float64Var(&f.kubeQPS, "kube-api-qps", 0, "Kubernetes API requests per second the controller may make, sustained (0: no client-side limit, the apiserver's priority and fairness decides, as controller-runtime does by default)")
	fs.IntVar(&f.kubeBurst, "kube-api-burst", 500, "Kubernetes API requests the controller may make in a burst (with --kube-api-qps)")
	fs.Func("log-level", "log level: debug, info (the default), warn or error", func(v string) error {
		l, err := logLevel(v)
		f.logLevel = l
		return err
	})
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if f.version {
		return f, nil // needs no other flag
	}
	if f.teleportAddr == "" || f.kubeCluster == "" {
		return f, fmt.Errorf("--teleport-addr and --kube-cluster are required")
	}
	if (f.identityFile == "") == (f.botDir == "") {
		return f, fmt.Errorf("exactly one of --identity-file and --tbot-dir is required")
	}
	if f.namePolicy != "namespace" && f.namePolicy != "any" {
		return f, fmt.Errorf("--name-policy %q: want namespace or any", f.namePolicy)
	}
	if _, err := namespaces(f.namespaces); err != nil {
		return f, err
	}
	if f.concurrent < 1 || f.kubeQPS < 0 || f.kubeBurst < 1 {
		return f, fmt.Errorf("--concurrent and --kube-api-burst must be positive, --kube-api-qps 0 or more")
	}
	return f, nil
}

// newLogger is the controller's logger: controller-runtime's zap (JSON) at
// --log-level, writing to w.
func newLogger(f flags, w io.Writer) logr.Logger {
	return zap.New(zap.Level(f.logLevel), zap.WriteTo(w))
}

// logLevel parses --log-level: zap's level names (debug shows the
// reconcilers' V(1) lines).
func logLevel(v string) (zapcore.Level, error) {
	switch v {
	case "debug", "info", "warn", "error":
		return zapcore.ParseLevel(v)
	}
	return zapcore.InfoLevel, fmt.Errorf("want debug, info, warn or error, not %q", v)
}

// namespaces parses --namespaces: empty means all; an empty item is an error
// (a stray comma must not widen the watch to every namespace).
func namespaces(v string) ([]string, error) {
	if v == "" {
		return nil, nil
	}
	var out []string
	for _, ns := range strings.Split(v, ",") {
		ns = strings.TrimSpace(ns)
		if ns == "" {
			return nil, fmt.Errorf("--namespaces %q: an empty namespace (leave the flag out to watch all)", v)
		}
		out = append(out, ns)
	}
	return out, nil
}

// stripCached drops what the controller never reads from its cache:
// managedFields everywhere, a Cluster's status but its certificates, and
// the annotations of metadata-only objects
// (its one metadata-only watch is Secrets': kubectl's
// last-applied-configuration annotation would hold a Secret's data).
func stripCached(o any) (any, error) {
	if m, ok := o.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	if p, ok := o.(*metav1.PartialObjectMetadata); ok {
		p.Annotations = nil
	}
	// Of a Cluster's status (instances, conditions, topology: large on a
	// real Cluster, rewritten by CNPG all the time) the controller reads the
	// certificates CNPG runs and which instances are in which state (it
	// switches them only when none is starting), and nothing else; it never
	// writes a Cluster's status, nor a Cluster with Update.
	if c, ok := o.(*cnpgv1.Cluster); ok {
		c.Status = cnpgv1.ClusterStatus{Certificates: c.Status.Certificates, SecretsResourceVersion: c.Status.SecretsResourceVersion,
			InstancesStatus: c.Status.InstancesStatus}
	}
	return o, nil
}

// kubeSystemUID is the UID of the kube-system namespace: stable for the
// life of a Kubernetes cluster, different in every other.
func kubeSystemUID(ctx context.Context) (string, error) {
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return "", err
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return "", err
	}
	var ns corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: "kube-system"}, &ns); err != nil {
		return "", err
	}
	return string(ns.UID), nil
}

// gcPercent is the controller's GOGC unless the environment sets one. Its
// heap is mostly its caches, and its work comes in bursts (a resync, many
// Clusters at once): Go's default, 100, lets the heap grow to twice what is
// live between collections. At 50 it grows by half: make bench measured
// the peak and the CPU of both (README, Performance).
const gcPercent = 50

// setGCPercent applies gcPercent unless GOGC is set (the Go runtime read
// that one already).
func setGCPercent(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

func main() {
	setGCPercent(os.Getenv)
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "cnpg-teleport:", err)
		os.Exit(2)
	}
	if f.version {
		fmt.Println("cnpg-teleport", versionString())
		return
	}
	ctrl.SetLogger(newLogger(f, os.Stderr))
	if err := run(ctrl.SetupSignalHandler(), f); err != nil {
		ctrl.Log.Error(err, "cnpg-teleport stopped")
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) error {
	static, err := dbspec.ParseLabels(f.labels)
	if err != nil {
		return fmt.Errorf("--labels: %w", err)
	}
	policy, err := dbspec.ParseLabelPolicy(f.annLabels)
	if err != nil {
		return fmt.Errorf("--annotation-labels: %w", err)
	}
	id := f.kubeClusterID
	if id == "" {
		if id, err = kubeSystemUID(ctx); err != nil {
			return fmt.Errorf("the Kubernetes cluster's identity (set --kube-cluster-id to choose one): %w", err)
		}
	}
	opts := dbspec.Options{KubeCluster: f.kubeCluster, KubeClusterID: id, StaticLabels: static, Domain: f.domain,
		AnnotationLabels: policy, AnyName: f.namePolicy == "any"}
	if err := opts.Validate(); err != nil {
		return err
	}
	tc, err := teleport.New(ctx, teleport.Config{
		Addrs: []string{f.teleportAddr}, IdentityFile: f.identityFile, BotDir: f.botDir, ReloadInterval: f.reload,
		Log: ctrl.Log.WithName("teleport"), OnIdentity: controllers.ObserveIdentityExpiry,
	})
	if err != nil {
		return err
	}
	defer func() { _ = tc.Close() }()

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := cnpgv1.AddToScheme(scheme); err != nil {
		return err
	}
	if err := cmapi.AddToScheme(scheme); err != nil { // issuer mode
		return err
	}
	// Only our own DatabaseRoles and Databases are cached, never every one in the cluster.
	ours := labels.SelectorFromSet(labels.Set{dbspec.LabelManagedBy: dbspec.ManagedByValue})
	cacheOpts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&cnpgv1.DatabaseRole{}: {Label: ours},
		&cnpgv1.Database{}:     {Label: ours},
	}, DefaultTransform: stripCached}
	watched, _ := namespaces(f.namespaces) // checked in parseFlags
	if len(watched) > 0 {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range watched {
			cacheOpts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	kube, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	// The apiserver names a client's field manager after its user agent,
	// which client-go takes from the executable's name by default: the
	// README's GitOps settings name the manager cnpg-teleport, whatever the
	// binary is called (the race-built one of make test, a renamed one).
	kube.UserAgent = controllers.FieldManager + "/" + versionString()
	if f.kubeQPS > 0 { // else controller-runtime's: no client-side limit
		kube.QPS, kube.Burst = float32(f.kubeQPS), f.kubeBurst
	}
	mgr, err := ctrl.NewManager(kube, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   cacheOpts,
		Metrics:                 metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress:  f.probeAddr,
		PprofBindAddress:        f.pprofAddr,
		LeaderElection:          f.leaderElection,
		LeaderElectionNamespace: f.leaderNS,
		LeaderElectionID:        "cnpg-teleport." + f.kubeCluster,
		// The manager is the last thing main runs: giving the Lease up on
		// the way out hands over in one retry period (a rolling update, a
		// deleted Pod) instead of a whole lease duration.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return err
	}
	return controllers.Run(ctx, mgr, controllers.Config{
		Teleport: controllers.Instrument(tc), Options: opts, Resync: f.resync, Namespaces: watched,
		Concurrent: f.concurrent, NoAgentAfter: f.noAgentAfter,
	})
}
