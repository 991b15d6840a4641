package controllers

import (
	"context"
	"errors"
	"slices"
	"sync"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"

	"github.com/cnpg-teleport/cnpg-teleport/teleport"
)

// ownedIndex remembers, per Cluster UID, the names of the db resources this
// controller made or saw for that Cluster. It is a superset (a name leaves
// only when Teleport says it is gone), so a pass reads each of a Cluster's
// names by name instead of listing every db resource Teleport holds: the
// cost of a pass does not grow with the size of a shared Teleport. It is
// filled once from a full list (the first pass, or the orphan collector),
// then by every list the orphan collector makes, every write of this
// process, and every read that finds one of a Cluster's db resources.
type ownedIndex struct {
	mu     sync.Mutex
	seeded bool
	// byUID holds each Cluster's names sorted: 1-3 a Cluster (a map each
	// was 2 MB at 1,220 Clusters in make bench).
	byUID map[string][]string
}

func newOwnedIndex() *ownedIndex { return &ownedIndex{byUID: map[string][]string{}} }

// addName records name as possibly owned by the Cluster of uid.
func (x *ownedIndex) addName(uid, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	names := x.byUID[uid]
	if i, found := slices.BinarySearch(names, name); !found {
		x.byUID[uid] = slices.Insert(names, i, name)
	}
}

// removeName forgets name for the Cluster of uid.
func (x *ownedIndex) removeName(uid, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	names := x.byUID[uid]
	if i, found := slices.BinarySearch(names, name); found {
		names = slices.Delete(names, i, i+1)
	}
	if len(names) == 0 {
		delete(x.byUID, uid)
		return
	}
	x.byUID[uid] = names
}

// names returns the names recorded for the Cluster of uid, sorted.
func (x *ownedIndex) names(uid string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.byUID[uid])
}

// seed adds every db resource of the list that this controller made (by
// its ownership labels) under the Cluster UID it names, and marks the index
// complete: a list shows everything that existed before this process.
func (x *ownedIndex) seed(dbs []teleport.DatabaseMeta, o Options) {
	for _, db := range dbs {
		if _, _, uid, ok := ClusterRef(db); ok && OwnedBy(db, o) {
			x.addName(uid, db.GetName())
		}
	}
	x.mu.Lock()
	x.seeded = true
	x.mu.Unlock()
}

func (x *ownedIndex) isSeeded() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.seeded
}

// readOwned reads, by name, the desired names and those the index records
// for c: visible maps each name to the db resource Teleport returned (absent:
// none, or one this identity may not see), owned holds those made for c.
// Before the index is complete it lists once (the only list a pass makes).
func (r *ClusterReconciler) readOwned(ctx context.Context, c *cnpgv1.Cluster, desired []string) (visible map[string]types.Database, owned []types.Database, err error) {
	if !r.index().isSeeded() {
		all, err := r.Teleport.ListDatabases(ctx)
		if err != nil {
			return nil, nil, err
		}
		r.index().seed(all, r.Options)
	}
	uid := string(c.UID)
	names := slices.Concat(desired, r.index().names(uid))
	slices.Sort(names)
	names = slices.Compact(names)
	visible = make(map[string]types.Database, len(names))
	var errs []error
	for _, name := range names {
		db, err := r.Teleport.GetDatabase(ctx, name)
		switch {
		case err == nil:
			visible[name] = db
			if OwnedByCluster(db, r.Options, c) {
				owned = append(owned, db)
				r.index().addName(uid, name)
			} else {
				r.index().removeName(uid, name)
			}
		case trace.IsNotFound(err) || trace.IsAccessDenied(err):
			// Gone, or another owner's that this identity may not see (a
			// create then meets AlreadyExists, as after a list that hid it).
			// A name this process wrote within the read lag stays: the read
			// may not show it yet.
			if !r.recent.within(name, r.now(), readLag) {
				r.index().removeName(uid, name)
			}
		default:
			errs = append(errs, err)
		}
	}
	return visible, owned, errors.Join(errs...)
}
