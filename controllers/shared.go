package controllers

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/gravitational/teleport/api/types"
)

// sharedReadTTL is how long a read that is the same for every Cluster
// (Teleport's database-client CA, its roles) serves every Cluster's pass;
// at most a quarter of the resync period, which bounds how late a CA
// rotation reaches the bundles.
const sharedReadTTL = 2 * time.Second

func (r *ClusterReconciler) sharedTTL() time.Duration {
	if r.Resync > 0 {
		return min(sharedReadTTL, r.Resync/4)
	}
	return sharedReadTTL
}

// sharedReads serves those reads from one Teleport call per sharedReadTTL,
// shared by all Clusters, so a resync of N Clusters makes about one such
// call, not N, and a burst of new Clusters does not multiply them. Callers
// that ask while a call is in flight wait for it. Errors are not kept.
type sharedReads struct {
	cas   shared[[]byte]
	roles shared[types.Role]
}

type shared[T any] struct {
	mu  sync.Mutex // held across the call: one call at a time
	at  time.Time
	val []T
}

// get returns a copy of the value read within ttl of now, else reads it.
func (s *shared[T]) get(now time.Time, ttl time.Duration, read func() ([]T, error)) ([]T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.val != nil && now.Sub(s.at) < ttl && !now.Before(s.at) {
		return slices.Clone(s.val), nil
	}
	val, err := read()
	if err != nil {
		return nil, err
	}
	if val == nil {
		val = []T{}
	}
	s.at, s.val = now, val
	return slices.Clone(val), nil
}

// databaseClientCAs is Teleport's database-client CA, shared across Clusters.
func (r *ClusterReconciler) databaseClientCAs(ctx context.Context) ([][]byte, error) {
	return r.shared.cas.get(r.now(), r.sharedTTL(), func() ([][]byte, error) { return r.Teleport.DatabaseClientCAs(ctx) })
}

// teleportRoles is Teleport's roles, shared across Clusters.
func (r *ClusterReconciler) teleportRoles(ctx context.Context) ([]types.Role, error) {
	return r.shared.roles.get(r.now(), r.sharedTTL(), func() ([]types.Role, error) { return r.Teleport.ListRoles(ctx) })
}
