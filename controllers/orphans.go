package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/trace"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport"
)

// OrphanCollector deletes the db resources this Kubernetes cluster's
// controller created whose Cluster is gone (by UID) or no longer opted in:
// the case of a finalizer removed by hand, or a Cluster deleted while the
// controller was down. It runs at start and every Period.
//
// It lists once and deletes later, so before each delete it reads again,
// uncached, what could have changed in between: the Cluster (re-created
// under the same name and opted in, its db resources are the reconciler's to
// take over; with keep, they stay) and the db resource itself (deleted only
// while it is still the orphan's, by Cluster UID).
type OrphanCollector struct {
	Client    client.Reader // the manager's cache of Clusters
	APIReader client.Reader // uncached: a Cluster is read again before its db resources are deleted
	Teleport  Teleport
	Options   dbspec.Options
	Period    time.Duration
	// Namespaces are the namespaces the controller watches (none: all). The
	// Cluster of a db resource elsewhere is not this controller's to judge:
	// it is never gone, and never counted or logged as an orphan.
	Namespaces []string
	// Owned is the reconciler's index of each Cluster's db names: every
	// list of a pass refreshes it (nil: none to refresh).
	Owned *ownedIndex
}

// Start runs until ctx ends (a manager.Runnable; the cache is synced first).
func (o *OrphanCollector) Start(ctx context.Context) error {
	t := time.NewTicker(o.Period)
	defer t.Stop()
	for {
		if n, err := o.Collect(ctx); err != nil {
			log.FromContext(ctx).Error(err, "orphan collection", "deleted", n)
		} else if n > 0 {
			log.FromContext(ctx).Info("orphan collection", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Collect makes one pass and returns how many db resources it deleted.
// Every pass that ends, with or without errors, counts in
// cnpg_teleport_orphan_passes_total.
func (o *OrphanCollector) Collect(ctx context.Context) (int, error) {
	defer orphanPasses.Inc()
	dbs, err := o.Teleport.ListDatabases(ctx)
	if err != nil {
		return 0, err
	}
	if o.Owned != nil {
		o.Owned.seed(dbs, o.Options)
	}
	if err := identityCheck(dbs, o.Options); err != nil {
		return 0, err
	}
	deleted, gone, owned := 0, 0, 0
	var errs []error
	defer func() { registered.Set(float64(owned - deleted - gone)) }()
	for _, db := range dbs {
		ns, name, uid, ok := dbspec.ClusterRef(db)
		if !dbspec.OwnedBy(db, o.Options) || !ok || !o.watched(ns) {
			continue
		}
		owned++
		if dbspec.Kept(db) || dbspec.Legacy(db) { // a legacy one is adopted by its Cluster, never collected
			continue
		}
		// The cache first (cheap); only a candidate is read again, uncached.
		orphan, err := o.orphaned(ctx, o.Client, db, ns, name, uid)
		if err == nil && orphan {
			orphan, err = o.stillOrphaned(ctx, db, ns, name, uid)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !orphan {
			continue
		}
		err = o.Teleport.DeleteDatabase(ctx, db.GetName())
		if err != nil && !trace.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		if o.Owned != nil {
			o.Owned.removeName(uid, db.GetName())
		}
		if err != nil {
			// Gone already, though the read said otherwise: Teleport's cache
			// trails its backend, and the Cluster's finalizer (or another
			// replica) deleted it since. Not this pass's deletion.
			gone++
			continue
		}
		log.FromContext(ctx).Info("deleted orphaned Teleport db", "db", db.GetName(), "cluster", ns+"/"+name)
		deleted++
	}
	return deleted, errors.Join(errs...)
}

// errIdentityConflict stops orphan collection: another Kubernetes cluster
// uses this controller's --kube-cluster name in the same Teleport.
var errIdentityConflict = errors.New("kube cluster identity conflict")

// identityCheck counts db resources of this --kube-cluster name made under
// another identity (metric cnpg_teleport_kube_cluster_identity_conflicts)
// and refuses to collect while there is one: the other cluster's Clusters
// are not ours to find, and deleting their resources would start a loop.
func identityCheck(dbs []teleport.DatabaseMeta, o dbspec.Options) error {
	n := 0
	other := ""
	for _, db := range dbs {
		if dbspec.IdentityConflict(db, o) {
			n++
			other = db.GetStaticLabels()[dbspec.LabelKubeClusterID]
		}
	}
	identityConflicts.Set(float64(n))
	if n > 0 {
		return fmt.Errorf("%w: %d db resources carry --kube-cluster=%s with identity %s, not this cluster's %s: two Kubernetes clusters share the name; orphan collection stopped (give each its own --kube-cluster)",
			errIdentityConflict, n, o.KubeCluster, other, o.KubeClusterID)
	}
	return nil
}

func (o *OrphanCollector) watched(ns string) bool {
	return len(o.Namespaces) == 0 || slices.Contains(o.Namespaces, ns)
}

// stillOrphaned reads the Cluster uncached and the db resource from
// Teleport again: a Cluster re-created since the cache was filled, or a db
// resource taken over since the list, is not an orphan.
func (o *OrphanCollector) stillOrphaned(ctx context.Context, db dbspec.Labeled, ns, name, uid string) (bool, error) {
	reader := o.APIReader
	if reader == nil {
		reader = o.Client
	}
	if orphan, err := o.orphaned(ctx, reader, db, ns, name, uid); err != nil || !orphan {
		return false, err
	}
	cur, err := o.Teleport.GetDatabase(ctx, db.GetName())
	if trace.IsNotFound(err) {
		return false, nil // gone already
	}
	if err != nil {
		return false, err
	}
	_, _, curUID, _ := dbspec.ClusterRef(cur)
	return dbspec.OwnedBy(cur, o.Options) && curUID == uid && !dbspec.Kept(cur), nil
}

// orphaned decides from the Cluster of the name (read through r) whether
// the db resource of the Cluster UID uid is an orphan.
func (o *OrphanCollector) orphaned(ctx context.Context, r client.Reader, db dbspec.Labeled, ns, name, uid string) (bool, error) {
	var c cnpgv1.Cluster
	err := r.Get(ctx, k8stypes.NamespacedName{Namespace: ns, Name: name}, &c)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return orphanOf(o.Options, &c, db, uid), nil
}

// orphanOf reports whether db, made for the Cluster UID uid, is an orphan
// given the live Cluster c of the same namespace and name. What the Cluster
// of that UID still holds our finalizer for is never an orphan. An opted-in
// Cluster keeps what it claims: its own, and, re-created under the name,
// the db names it builds, which the reconciler takes over. A keep annotation
// on the live Cluster is honoured even after it dropped register in the same
// edit (the reconciler has not labelled its db resources kept yet), and any
// keep value but "false" is not guessed at: the reconciler reports it.
func orphanOf(o dbspec.Options, c *cnpgv1.Cluster, db dbspec.Labeled, uid string) bool {
	if string(c.UID) == uid && controllerutil.ContainsFinalizer(c, Finalizer) {
		// Its own Cluster still holds our finalizer: the reconciler releases
		// the db (and says so with an Event); deleting it here would race it.
		return false
	}
	if OptedIn(c) {
		return string(c.UID) != uid && !claims(o, c, db)
	}
	if v, ok := c.Annotations[dbspec.AnnotationKeep]; string(c.UID) == uid && ok && v != "false" {
		return false
	}
	return true
}

// claims reports whether the opted-in Cluster c builds the name of db (for
// its endpoint or Pooler), so its reconciler takes db over. A Cluster with
// annotations that do not parse claims everything until they are fixed.
func claims(o dbspec.Options, c *cnpgv1.Cluster, db dbspec.Labeled) bool {
	spec, err := ParseAnnotations(o, c)
	if err != nil {
		return true
	}
	l := db.GetStaticLabels()
	ep := l[dbspec.LabelEndpoint]
	if p := l[dbspec.LabelPooler]; p != "" {
		ep = PoolerEndpoint(c, &cnpgv1.Pooler{ObjectMeta: metav1.ObjectMeta{Name: p}})
	}
	return ep != "" && spec.DBName(ep) == db.GetName()
}
