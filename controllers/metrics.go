package controllers

import (
	"context"
	"time"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/cnpg-teleport/cnpg-teleport/teleport"
)

// Prometheus metrics, registered with controller-runtime's registry (served
// on --metrics-bind-address beside controller_runtime_reconcile_total).
var (
	teleportCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cnpg_teleport_teleport_requests_total",
		Help: "Teleport API calls by method and result (ok, not_found, already_exists, access_denied, unavailable, error).",
	}, []string{"method", "result"})
	teleportLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cnpg_teleport_teleport_request_duration_seconds",
		Help:    "Latency of Teleport API calls by method.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	}, []string{"method"})
	registered = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cnpg_teleport_registered_databases",
		Help: "Teleport db resources owned by this controller's Kubernetes cluster for Clusters in the watched namespaces, as of the last orphan collection.",
	})
	orphanPasses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cnpg_teleport_orphan_passes_total",
		Help: "Orphan collection passes finished (with or without errors).",
	})
	identityConflicts = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cnpg_teleport_kube_cluster_identity_conflicts",
		Help: "Teleport db resources of this controller's --kube-cluster name made by another Kubernetes cluster identity; while above 0, orphan collection is stopped.",
	})
	identityExpiry = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cnpg_teleport_identity_expiry_timestamp_seconds",
		Help: "When the certificate of the controller's loaded Teleport identity expires (Unix time); tbot renews it and the controller reloads it, so it keeps moving forward.",
	})
	riskyRoles = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cnpg_teleport_risky_teleport_roles",
		Help: "Teleport roles that let their holders reach the Cluster's db resources as a CNPG system user (or any user); only Clusters with such roles have a series.",
	}, []string{"namespace", "cluster"})
)

func init() {
	metrics.Registry.MustRegister(teleportCalls, teleportLatency, registered, orphanPasses, identityConflicts, riskyRoles, identityExpiry)
}

// ObserveIdentityExpiry records when the loaded Teleport identity expires
// (teleport.Config.OnIdentity).
func ObserveIdentityExpiry(notAfter time.Time) { identityExpiry.Set(float64(notAfter.Unix())) }

// Instrument wraps a Teleport client with call counters and latency histograms.
func Instrument(c Teleport) Teleport { return instrumented{c} }

type instrumented struct{ next Teleport }

func observe(method string, start time.Time, err error) {
	teleportLatency.WithLabelValues(method).Observe(time.Since(start).Seconds())
	teleportCalls.WithLabelValues(method, resultOf(err)).Inc()
}

func resultOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case trace.IsNotFound(err):
		return "not_found"
	case trace.IsAlreadyExists(err):
		return "already_exists"
	case trace.IsAccessDenied(err):
		return "access_denied"
	case trace.IsConnectionProblem(err):
		return "unavailable"
	default:
		return "error"
	}
}

func (i instrumented) GetDatabase(ctx context.Context, name string) (db types.Database, err error) {
	defer func(t time.Time) { observe("GetDatabase", t, err) }(time.Now())
	return i.next.GetDatabase(ctx, name)
}

func (i instrumented) ListDatabases(ctx context.Context) (dbs []teleport.DatabaseMeta, err error) {
	defer func(t time.Time) { observe("ListDatabases", t, err) }(time.Now())
	return i.next.ListDatabases(ctx)
}

func (i instrumented) CreateDatabase(ctx context.Context, db types.Database) (err error) {
	defer func(t time.Time) { observe("CreateDatabase", t, err) }(time.Now())
	return i.next.CreateDatabase(ctx, db)
}

func (i instrumented) UpdateDatabase(ctx context.Context, db types.Database) (err error) {
	defer func(t time.Time) { observe("UpdateDatabase", t, err) }(time.Now())
	return i.next.UpdateDatabase(ctx, db)
}

func (i instrumented) DeleteDatabase(ctx context.Context, name string) (err error) {
	defer func(t time.Time) { observe("DeleteDatabase", t, err) }(time.Now())
	return i.next.DeleteDatabase(ctx, name)
}

func (i instrumented) ListRoles(ctx context.Context) (roles []types.Role, err error) {
	defer func(t time.Time) { observe("ListRoles", t, err) }(time.Now())
	return i.next.ListRoles(ctx)
}

func (i instrumented) DatabaseClientCAs(ctx context.Context) (cas [][]byte, err error) {
	defer func(t time.Time) { observe("DatabaseClientCAs", t, err) }(time.Now())
	return i.next.DatabaseClientCAs(ctx)
}

func (i instrumented) DatabaseServers(ctx context.Context, labels map[string]string) (n map[string]int, err error) {
	defer func(t time.Time) { observe("DatabaseServers", t, err) }(time.Now())
	return i.next.DatabaseServers(ctx, labels)
}
