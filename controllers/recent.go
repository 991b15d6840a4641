package controllers

import (
	"sync"
	"time"

	"github.com/gravitational/teleport/api/types"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
)

// recentWrites remembers, per db name, what this process last wrote and
// when. Teleport serves reads from a cache that trails writes by up to about
// a second; within that window a read that contradicts our own write is
// stale, not news.
type recentWrites struct {
	mu     sync.Mutex
	m      map[string]recentWrite
	pruned time.Time // when what no read lag concerns was last dropped
}

type recentWrite struct {
	at  time.Time
	was types.Database
}

func (w *recentWrites) wrote(db types.Database, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]recentWrite{}
	}
	w.prune(now)
	w.m[db.GetName()] = recentWrite{at: now, was: db.Copy()}
}

// prune drops what no read lag can concern, at most once per readLag; the
// reads call it too, so a burst of writes is not held after it (make bench:
// 5.5 MB of copies kept through the idle resyncs after 2,000 creates).
// Callers hold w.mu.
func (w *recentWrites) prune(now time.Time) {
	if now.Sub(w.pruned) < readLag {
		return
	}
	w.pruned = now
	for name, e := range w.m {
		if now.Sub(e.at) > readLag {
			delete(w.m, name)
		}
	}
}

func (w *recentWrites) forget(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, name)
}

// last returns what this process wrote under name less than lag ago.
func (w *recentWrites) last(name string, now time.Time, lag time.Duration) (types.Database, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.prune(now)
	e, ok := w.m[name]
	if !ok || now.Sub(e.at) >= lag {
		return nil, false
	}
	return e.was, true
}

// withinFor reports whether db's name was written for db's Cluster (its
// UID label) less than lag ago: a write for an earlier Cluster of the same
// name (deleted and re-created) does not count.
func (w *recentWrites) withinFor(db types.Database, now time.Time, lag time.Duration) bool {
	was, ok := w.last(db.GetName(), now, lag)
	if !ok {
		return false
	}
	_, _, wasUID, _ := dbspec.ClusterRef(was)
	_, _, uid, _ := dbspec.ClusterRef(db)
	return wasUID == uid
}

// within reports whether name was written less than lag ago.
func (w *recentWrites) within(name string, now time.Time, lag time.Duration) bool {
	_, ok := w.last(name, now, lag)
	return ok
}

// same reports whether exactly db was written less than lag ago.
func (w *recentWrites) same(db types.Database, now time.Time, lag time.Duration) bool {
	was, ok := w.last(db.GetName(), now, lag)
	return ok && !dbspec.NeedsUpdate(db, was)
}

// since returns copies of what was written less than lag ago and matches.
func (w *recentWrites) since(now time.Time, lag time.Duration, match func(types.Database) bool) []types.Database {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []types.Database
	for _, e := range w.m {
		if now.Sub(e.at) < lag && match(e.was) {
			out = append(out, e.was.Copy())
		}
	}
	return out
}
