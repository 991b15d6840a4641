// Command cnpg-teleport registers annotated CloudNativePG Clusters as
// Teleport db resources (verify-full), and removes them when the Cluster is
// deleted or opts out.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/cnpg-teleport/cnpg-teleport/controllers"
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
	metricsAddr    string
	probeAddr      string
	leaderElection bool
}

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("cnpg-teleport", flag.ContinueOnError)
	fs.StringVar(&f.teleportAddr, "teleport-addr", "", "Teleport auth or proxy address (host:port)")
	fs.StringVar(&f.identityFile, "identity-file", "", "Teleport identity file (tctl auth sign --format=file)")
	fs.StringVar(&f.botDir, "tbot-dir", "", "tbot directory destination (holds 'identity'); renewals are picked up without restart")
	fs.DurationVar(&f.reload, "identity-reload-interval", time.Minute, "how often the identity files are checked for renewal")
	fs.StringVar(&f.kubeCluster, "kube-cluster", "", "name of this Kubernetes cluster (in db names and ownership labels; unique per Teleport)")
	fs.StringVar(&f.labels, "labels", "", "static labels for every db resource, k=v,k2=v2")
	fs.StringVar(&f.domain, "cluster-domain", "cluster.local", "Kubernetes cluster DNS domain")
	fs.StringVar(&f.namespaces, "namespaces", "", "comma-separated namespaces to watch (default: all)")
	fs.DurationVar(&f.resync, "resync-period", 10*time.Minute, "how often registrations are compared with Teleport and orphans collected")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "Prometheus metrics address ('0' disables)")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "health probe address")
	fs.BoolVar(&f.leaderElection, "leader-elect", false, "enable leader election (for more than one replica)")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if f.teleportAddr == "" || f.kubeCluster == "" {
		return f, fmt.Errorf("--teleport-addr and --kube-cluster are required")
	}
	if (f.identityFile == "") == (f.botDir == "") {
		return f, fmt.Errorf("exactly one of --identity-file and --tbot-dir is required")
	}
	return f, nil
}

func main() {
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "cnpg-teleport:", err)
		os.Exit(2)
	}
	ctrl.SetLogger(zap.New())
	if err := run(ctrl.SetupSignalHandler(), f); err != nil {
		ctrl.Log.Error(err, "cnpg-teleport stopped")
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) error {
	static, err := controllers.ParseLabels(f.labels)
	if err != nil {
		return fmt.Errorf("--labels: %w", err)
	}
	opts := controllers.Options{KubeCluster: f.kubeCluster, StaticLabels: static, Domain: f.domain}
	if err := opts.Validate(); err != nil {
		return err
	}
	tc, err := teleport.New(ctx, teleport.Config{
		Addrs: []string{f.teleportAddr}, IdentityFile: f.identityFile, BotDir: f.botDir, ReloadInterval: f.reload,
		Log: ctrl.Log.WithName("teleport"),
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
	// Only our own DatabaseRoles are cached, never every one in the cluster.
	cacheOpts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&cnpgv1.DatabaseRole{}: {Label: labels.SelectorFromSet(labels.Set{controllers.LabelManagedBy: controllers.ManagedByValue})},
	}}
	var namespaces []string
	if f.namespaces != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range strings.Split(f.namespaces, ",") {
			cacheOpts.DefaultNamespaces[strings.TrimSpace(ns)] = cache.Config{}
			namespaces = append(namespaces, strings.TrimSpace(ns))
		}
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Cache:                  cacheOpts,
		Metrics:                metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress: f.probeAddr,
		LeaderElection:         f.leaderElection,
		LeaderElectionID:       "cnpg-teleport." + f.kubeCluster,
	})
	if err != nil {
		return err
	}
	return controllers.Run(ctx, mgr, controllers.Config{
		Teleport: controllers.Instrument(tc), Options: opts, Resync: f.resync, Namespaces: namespaces,
	})
}
