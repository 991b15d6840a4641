package controllers

import (
	"context"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"golang.org/x/time/rate"

	"github.com/cnpg-teleport/cnpg-teleport/certs"
	"github.com/cnpg-teleport/cnpg-teleport/clusterspec"
)

// serverCAIndex indexes Clusters by the names of the Secrets they depend on
// (server CA, their own client CA, the bundle), so a renewed CA or a changed
// bundle maps back to the Clusters that use it.
const serverCAIndex = "cnpg-teleport.serverCASecret"

// SetupWithManager wires the reconciler: Clusters (only changes that matter:
// spec, annotations, deletion, finalizers) and Secret metadata (a server CA
// renewed), never the content of every Secret.
func (r *ClusterReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &cnpgv1.Cluster{}, serverCAIndex, func(o client.Object) []string {
		c := o.(*cnpgv1.Cluster)
		return []string{serverCASecret(c), clusterspec.OwnClientCASecret(c, BundleSecretName(c)), BundleSecretName(c),
			certs.ReplicationSecretName(c), certs.ServerSecretName(c), c.Name + "-server", certs.PoolerSecretName(c)}
	}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("cluster").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Concurrent, 1), RateLimiter: retryLimiter()}).
		For(&cnpgv1.Cluster{}, builder.WithPredicates(clusterChanged())).
		// The same updates For lets through when CNPG reports the certificates, raised (see priorityReported).
		Watches(&cnpgv1.Cluster{}, reportedFirst(), builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return false }, DeleteFunc: func(event.DeleteEvent) bool { return false },
			GenericFunc: func(event.GenericEvent) bool { return false },
			UpdateFunc:  func(e event.UpdateEvent) bool { return certificatesReported(e.ObjectOld, e.ObjectNew) },
		})).
		Owns(&cnpgv1.DatabaseRole{}).
		Owns(&cnpgv1.Database{}). // the auto-users admin's schema
		Watches(&cnpgv1.Pooler{}, handler.EnqueueRequestsFromMapFunc(clusterOfPooler), builder.WithPredicates(poolerChanged())).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.clustersForSecret),
			builder.WithPredicates(predicate.ResourceVersionChangedPredicate{})).
		Complete(r)
}

// reportedFirst queues a Cluster at priorityReported: one whose trust step
// CNPG has just completed goes before those not started yet.
func reportedFirst() handler.EventHandler {
	return handler.Funcs{UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(e.ObjectNew)}
		if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
			pq.AddWithOpts(priorityqueue.AddOpts{Priority: new(priorityReported)}, req)
			return
		}
		q.Add(req)
	}}
}

// maxRetryDelay caps the wait before a failed pass is retried.
// controller-runtime's default cap is 1000 s: a Teleport outage fails calls
// fast (Teleport's client breaker), the waits double per failure, and after
// it a Cluster could wait 16 min to be looked at again.
const maxRetryDelay = 30 * time.Second

// retryLimiter is controller-runtime's default retry limiter (per Cluster
// from 5 ms, doubling; 10 retries/s overall, bursts of 100) with that cap.
func retryLimiter() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, maxRetryDelay),
		&workqueue.TypedBucketRateLimiter[reconcile.Request]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
	)
}

// clusterChanged lets through what changes the registration, including the
// annotation-removed update that must trigger cleanup, and CNPG reporting the
// certificates it runs (what a registration waits for); CNPG's other
// frequent status writes do not wake the controller.
func clusterChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld, e.ObjectNew
			return o.GetGeneration() != n.GetGeneration() ||
				!equalMaps(o.GetAnnotations(), n.GetAnnotations()) ||
				!o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp()) ||
				len(o.GetFinalizers()) != len(n.GetFinalizers()) ||
				certificatesReported(o, n)
		},
	}
}

// certificatesReported: CNPG's status names other certificates, or another
// version of the client CA, than before.
func certificatesReported(o, n client.Object) bool {
	oc, ok := o.(*cnpgv1.Cluster)
	nc, ok2 := n.(*cnpgv1.Cluster)
	if !ok || !ok2 {
		return false
	}
	return oc.Status.SecretsResourceVersion.ClientCASecretVersion != nc.Status.SecretsResourceVersion.ClientCASecretVersion ||
		!apiequality.Semantic.DeepEqual(oc.Status.Certificates, nc.Status.Certificates)
}

// poolerChanged lets through a Pooler's creation, deletion and changes of
// spec or annotations (a Pooler asking to be registered), not its status.
func poolerChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld, e.ObjectNew
			return o.GetGeneration() != n.GetGeneration() || !equalMaps(o.GetAnnotations(), n.GetAnnotations()) ||
				!o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp())
		},
	}
}

// clusterOfPooler maps a Pooler to its Cluster (a Pooler of a Cluster that
// has not opted in costs one cached read, no more).
func clusterOfPooler(_ context.Context, o client.Object) []reconcile.Request {
	p, ok := o.(*cnpgv1.Pooler)
	if !ok || p.Spec.Cluster.Name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: k8stypes.NamespacedName{Namespace: p.Namespace, Name: p.Spec.Cluster.Name}}}
}

func (r *ClusterReconciler) clustersForSecret(ctx context.Context, o client.Object) []reconcile.Request {
	var list cnpgv1.ClusterList
	if err := r.Client.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{serverCAIndex: o.GetName()}); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		if OptedIn(&list.Items[i]) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
