package controllers

import (
	"context"
	"time"

	"github.com/gravitational/teleport/api/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport"
)

var _ Teleport = (*teleport.APIClient)(nil)

// Teleport is the part of the Teleport API the controller calls, and no
// more: teleport.APIClient has it, teleporttest.Fake plays it in tests.
// Errors keep their trace kind (trace.IsNotFound, IsAlreadyExists,
// IsAccessDenied, IsBadParameter).
type Teleport interface {
	GetDatabase(ctx context.Context, name string) (types.Database, error)
	ListDatabases(ctx context.Context) ([]teleport.DatabaseMeta, error)
	CreateDatabase(ctx context.Context, db types.Database) error
	UpdateDatabase(ctx context.Context, db types.Database) error
	DeleteDatabase(ctx context.Context, name string) error
	DatabaseClientCAs(ctx context.Context) ([][]byte, error)
	ListRoles(ctx context.Context) ([]types.Role, error)
	DatabaseServers(ctx context.Context, labels map[string]string) (map[string]int, error)
}

// Config is everything the controller needs besides the manager.
type Config struct {
	Teleport Teleport
	Options  dbspec.Options
	// Resync is how often registrations are compared with Teleport and
	// orphans collected (default 10 min).
	Resync time.Duration
	// Retry is the wait for a missing dependency such as the server CA (default 30 s).
	Retry time.Duration
	// Namespaces are the namespaces the manager's cache watches (none: all);
	// the orphan collector leaves db resources of other namespaces alone.
	Namespaces []string
	// Concurrent is how many Clusters are reconciled at once (default 1).
	Concurrent int
	// NoAgentAfter is how long a registered db resource may go unserved by
	// any Teleport database agent before a NoAgent Warning (0: no check).
	NoAgentAfter time.Duration
}

// agentPeriod is how often the agent check lists the heartbeats: a third of
// the NoAgent bound, between 1 s and 30 s.
func agentPeriod(after time.Duration) time.Duration {
	return min(max(after/3, time.Second), 30*time.Second)
}

// trustPoll is how often a registration waiting for CNPG looks at its
// status again, besides the wake-up its certificate status brings.
const trustPoll = 5 * time.Second

// Setup adds the Cluster controller and the orphan collector to mgr.
func Setup(ctx context.Context, mgr ctrl.Manager, cfg Config) error {
	if err := cfg.Options.Validate(); err != nil {
		return err
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 30 * time.Second
	}
	owned := newOwnedIndex()
	r := &ClusterReconciler{
		Owned:      owned,
		Client:     mgr.GetClient(),
		APIReader:  mgr.GetAPIReader(),
		Teleport:   cfg.Teleport,
		Recorder:   fitNotes{mgr.GetEventRecorder("cnpg-teleport")},
		Options:    cfg.Options,
		Resync:     cfg.Resync,
		Retry:      cfg.Retry,
		TrustPoll:  trustPoll,
		Concurrent: cfg.Concurrent,
	}
	if cfg.NoAgentAfter > 0 {
		r.Agents = &AgentCheck{
			Teleport: cfg.Teleport, Recorder: r.Recorder, After: cfg.NoAgentAfter, Period: agentPeriod(cfg.NoAgentAfter),
			Labels: map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue, dbspec.LabelKubeCluster: cfg.Options.KubeCluster},
		}
		if err := mgr.Add(r.Agents); err != nil {
			return err
		}
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	if err := mgr.Add(&OrphanCollector{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Teleport: cfg.Teleport, Options: cfg.Options,
		Period: cfg.Resync, Namespaces: cfg.Namespaces, Owned: owned,
	}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("readyz", healthz.Ping)
}

// Run sets the controller up and runs the manager until ctx ends.
func Run(ctx context.Context, mgr ctrl.Manager, cfg Config) error {
	if err := Setup(ctx, mgr, cfg); err != nil {
		return err
	}
	return mgr.Start(ctx)
}
