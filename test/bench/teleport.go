package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gravitational/teleport/api/breaker"
	"github.com/gravitational/teleport/api/client"
	"github.com/gravitational/teleport/api/types"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport"
	"github.com/cnpg-teleport/cnpg-teleport/test/world"
)

// adminRole lets the benchmark itself create foreign db resources and watch
// every db resource; the controller keeps its own least-privilege role.
const adminRole = `kind: role
version: v6
metadata:
  name: bench-admin
spec:
  allow:
    db_labels: {"*": "*"}
    rules:
    - resources: [db]
      verbs: [list, read, create, update, delete]
---
kind: user
version: v2
metadata:
  name: bench-admin
spec:
  roles: [bench-admin]
`

func adminClient(ctx context.Context, tp *world.Teleport) (*client.Client, error) {
	if err := tp.Create(ctx, adminRole); err != nil {
		return nil, err
	}
	id, err := tp.SignIdentity(ctx, "bench-admin", 8*time.Hour)
	if err != nil {
		return nil, err
	}
	return client.New(ctx, client.Config{Addrs: []string{tp.AuthAddr}, Credentials: []client.Credentials{client.LoadIdentityFile(id)},
		// It lists every db resource, foreign ones and the by-hand ones too.
		DialOpts: []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(teleport.MaxListBytes))},
		// The meter must see Teleport back at once after an outage, not 60 s later.
		CircuitBreakerConfig: breaker.NoopBreakerConfig()})
}

// dbWatch follows Teleport's event stream of db resources: which of the
// controller's are present, for which Cluster (namespace/name), and how
// their number grew over time.
type dbWatch struct {
	mu      sync.Mutex
	cluster map[string]string // db name -> namespace/cluster, the controller's only
	changed chan struct{}     // closed and replaced on every change
	err     error
	curve   []Point // set by track: (seconds since t0, db resources of the tracked Clusters)
	track   func(string) bool
	t0      time.Time
}

// Point is one (x, y) sample of a curve.
type Point struct{ X, Y float64 }

func watchDBs(ctx context.Context, clt *client.Client) (*dbWatch, error) {
	d := &dbWatch{cluster: map[string]string{}, changed: make(chan struct{})}
	w, err := d.connect(ctx, clt)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			d.follow(w)
			// Teleport closes a watcher that falls behind (a burst of
			// writes): watch again and re-read the state in between.
			var err error
			for w, err = d.connect(ctx, clt); err != nil; w, err = d.connect(ctx, clt) {
				if ctx.Err() != nil {
					d.fail(ctx.Err())
					return
				}
				time.Sleep(time.Second)
			}
		}
	}()
	return d, nil
}

// connect starts a watcher and, once it is initialised, replaces the state
// with a full read, so nothing between two watchers is missed.
func (d *dbWatch) connect(ctx context.Context, clt *client.Client) (types.Watcher, error) {
	w, err := clt.NewWatcher(ctx, types.Watch{Name: "bench", Kinds: []types.WatchKind{{Kind: types.KindDatabase}}})
	if err != nil {
		return nil, err
	}
	select {
	case ev := <-w.Events():
		if ev.Type != types.OpInit {
			_ = w.Close()
			return nil, fmt.Errorf("teleport watch: first event %v, want init", ev.Type)
		}
	case <-w.Done():
		return nil, fmt.Errorf("teleport watch: %w", w.Error())
	case <-time.After(30 * time.Second):
		_ = w.Close()
		return nil, fmt.Errorf("teleport watch: no init event in 30 s")
	}
	all, err := clt.GetDatabases(ctx)
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	d.mu.Lock()
	clear(d.cluster)
	for _, db := range all {
		d.putLocked(db.GetName(), db.GetAllLabels())
	}
	d.recordLocked()
	d.mu.Unlock()
	return w, nil
}

// follow applies the watcher's events until it closes.
func (d *dbWatch) follow(w types.Watcher) {
	defer func() { _ = w.Close() }()
	for {
		select {
		case ev := <-w.Events():
			d.apply(ev)
		case <-w.Done():
			return
		}
	}
}

func (d *dbWatch) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.err = err
	d.notifyLocked()
}

func (d *dbWatch) apply(ev types.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch ev.Type {
	case types.OpPut:
		d.putLocked(ev.Resource.GetName(), ev.Resource.GetMetadata().Labels)
	case types.OpDelete:
		delete(d.cluster, ev.Resource.GetName())
	default:
		return
	}
	d.recordLocked()
}

// putLocked records a db resource if it is the controller's.
func (d *dbWatch) putLocked(name string, l map[string]string) {
	if l[dbspec.LabelManagedBy] == dbspec.ManagedByValue {
		d.cluster[name] = l[dbspec.LabelNamespace] + "/" + l[dbspec.LabelCluster]
	}
}

func (d *dbWatch) recordLocked() {
	if d.track != nil {
		d.curve = append(d.curve, Point{time.Since(d.t0).Seconds(), float64(d.countLocked(d.track))})
	}
	d.notifyLocked()
}

func (d *dbWatch) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *dbWatch) countLocked(match func(string) bool) int {
	n := 0
	for _, c := range d.cluster {
		if match(c) {
			n++
		}
	}
	return n
}

// namesOf returns the db names of a Cluster (namespace/name).
func (d *dbWatch) namesOf(cluster string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for n, c := range d.cluster {
		if c == cluster {
			out = append(out, n)
		}
	}
	return out
}

// startCurve records the count of matching db resources from now on.
func (d *dbWatch) startCurve(match func(string) bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.track, d.t0, d.curve = match, time.Now(), []Point{{0, float64(d.countLocked(match))}}
}

func (d *dbWatch) stopCurve() []Point {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.track = nil
	return d.curve
}

// wait returns once cond holds (checked under the lock at every change).
func (d *dbWatch) wait(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.After(timeout)
	for {
		d.mu.Lock()
		ok, err, ch := cond(), d.err, d.changed
		d.mu.Unlock()
		if ok {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-deadline:
			return fmt.Errorf("%s: not within %s", what, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// createForeign adds db resources up to n named foreign-<i>, labelled as
// another team's: what a shared Teleport holds beside the controller's.
func createForeign(ctx context.Context, clt *client.Client, from, to int) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := from; i < to; i++ {
		g.Go(func() error {
			db, err := types.NewDatabaseV3(types.Metadata{Name: fmt.Sprintf("foreign-%05d", i), Labels: map[string]string{"team": "other"}},
				types.DatabaseSpecV3{Protocol: "postgres", URI: fmt.Sprintf("foreign-%05d.example.com:5432", i)})
			if err != nil {
				return err
			}
			return clt.CreateDatabase(ctx, db)
		})
	}
	return g.Wait()
}

// byHandSync is one sync of the by-hand approach
// (shared/seeds/teleport-cnpg-by-hand.md): an ArgoCD PostSync Job that runs
// `tctl create --force` with every database, whatever changed.
func byHandSync(ctx context.Context, tp *world.Teleport, dir string, clusters int, caPEM []byte) error {
	path := filepath.Join(dir, "byhand.yaml")
	if _, err := os.Stat(path); err != nil {
		var b strings.Builder
		ca := "      " + strings.ReplaceAll(strings.TrimSpace(string(caPEM)), "\n", "\n      ")
		for i := range clusters {
			for _, ep := range []string{"rw", "ro"} {
				fmt.Fprintf(&b, "---\nkind: db\nversion: v3\nmetadata:\n  name: byhand-%05d-%s\n  labels: {provisioned_by: cloudnative-pg}\nspec:\n  protocol: postgres\n  uri: byhand-%05d-%s.db.svc.cluster.local:5432\n  tls:\n    mode: verify-full\n    ca_cert: |\n%s\n",
					i, ep, i, ep, ca)
			}
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			return err
		}
	}
	_, err := tp.Tctl(ctx, "", "create", "--force", "-f", path)
	return err
}
