package controllers

import (
	"context"
	"errors"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/trace"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// OrphanCollector deletes the db resources this Kubernetes cluster's
// controller created whose Cluster is gone (by UID) or no longer opted in:
// the case of a finalizer removed by hand, or a Cluster deleted while the
// controller was down. It runs at start and every Period.
type OrphanCollector struct {
	Client   client.Reader // the manager's cache of Clusters
	Teleport Teleport
	Options  Options
	Period   time.Duration
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
func (o *OrphanCollector) Collect(ctx context.Context) (int, error) {
	dbs, err := o.Teleport.ListDatabases(ctx)
	if err != nil {
		return 0, err
	}
	deleted, owned := 0, 0
	var errs []error
	defer func() { registered.Set(float64(owned - deleted)) }()
	for _, db := range dbs {
		if !OwnedBy(db, o.Options) {
			continue
		}
		owned++
		ns, name, uid, ok := ClusterRef(db)
		if !ok {
			continue
		}
		orphan, err := o.orphaned(ctx, ns, name, uid)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !orphan || Kept(db) {
			continue
		}
		if err := o.Teleport.DeleteDatabase(ctx, db.GetName()); err != nil && !trace.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		log.FromContext(ctx).Info("deleted orphaned Teleport db", "db", db.GetName(), "cluster", ns+"/"+name)
		deleted++
	}
	return deleted, errors.Join(errs...)
}

func (o *OrphanCollector) orphaned(ctx context.Context, ns, name, uid string) (bool, error) {
	var c cnpgv1.Cluster
	err := o.Client.Get(ctx, k8stypes.NamespacedName{Namespace: ns, Name: name}, &c)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return string(c.UID) != uid || !OptedIn(&c), nil
}
