package controllers

import (
	"context"
	"errors"
	"slices"
	"sync"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
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
	// applied holds the UIDs of the Clusters a pass of this process has
	// registered (or tried to): see firstApply.
	applied map[string]struct{}
}

func newOwnedIndex() *ownedIndex {
	return &ownedIndex{byUID: map[string][]string{}, applied: map[string]struct{}{}}
}

// firstApply reports whether this is the first registration of the Cluster
// of uid in this process while the complete index records no name for it:
// as far as Teleport's list and this process's writes show, it has no db
// resource, so its names are created without being read first (a create
// that meets one answers AlreadyExists, and only then is it read). Later
// passes read every desired name, so a name held by another owner that the
// controller may see costs one failed create per process, not one a resync
// (one it may not see costs a failed create every pass, as before).
func (x *ownedIndex) firstApply(uid string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.applied[uid]; ok {
		return false
	}
	x.applied[uid] = struct{}{}
	return x.seeded && len(x.byUID[uid]) == 0
}

// forget drops what the index holds for a Cluster that is gone or opted out.
func (x *ownedIndex) forget(uid string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.applied, uid)
	delete(x.byUID, uid)
}

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
func (x *ownedIndex) seed(dbs []teleport.DatabaseMeta, o dbspec.Options) {
	for _, db := range dbs {
		if _, _, uid, ok := dbspec.ClusterRef(db); ok && dbspec.OwnedBy(db, o) {
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
	if err := r.seedIndex(ctx); err != nil {
		return nil, nil, err
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

// seedIndex fills the index from one list of every db resource, once.
func (r *ClusterReconciler) seedIndex(ctx context.Context) error {
	if r.index().isSeeded() {
		return nil
	}
	all, err := r.Teleport.ListDatabases(ctx)
	if err != nil {
		return err
	}
	r.index().seed(all, r.Options)
	return nil
}
