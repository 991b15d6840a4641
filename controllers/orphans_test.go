package controllers

import (
	"context"
	"fmt"
	"testing"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport/teleporttest"
)

func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := cnpgv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// kube is a Kubernetes view holding exactly clusters.
func kube(t *testing.T, clusters ...*cnpgv1.Cluster) client.Reader {
	t.Helper()
	b := fake.NewClientBuilder().WithScheme(testScheme(t))
	for _, c := range clusters {
		b = b.WithObjects(c.DeepCopy())
	}
	return b.Build()
}

// namespaced is a cache restricted to some namespaces, as the manager's is
// with --namespaces: reads elsewhere fail (not NotFound).
type namespaced struct {
	client.Reader
	ns map[string]bool
}

func (n namespaced) Get(ctx context.Context, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
	if !n.ns[key.Namespace] {
		return fmt.Errorf("unable to get: %v because of unknown namespace for the cache", key)
	}
	return n.Reader.Get(ctx, key, o, opts...)
}

func withUID(c *cnpgv1.Cluster, uid string) *cnpgv1.Cluster {
	c.UID = k8stypes.UID(uid)
	return c
}

func registeredDBs(t *testing.T, c *cnpgv1.Cluster) []types.Database {
	t.Helper()
	reg := c.DeepCopy()
	reg.Annotations = map[string]string{dbspec.AnnotationRegister: "true"}
	dbs, err := DesiredDatabases(opts, reg, testCA(t, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	return dbs
}

// TestCollect covers which db resources a pass deletes. Each case seeds
// Teleport with the rw db of the Cluster "app/pg" of UID old (registered
// before, no keep label), a cache and an uncached view of Kubernetes, and
// optionally acts between the collector's List and what follows.
func TestCollect(t *testing.T) {
	old := withUID(cluster("app", "pg", 1, nil), "old")
	optedIn := func(uid string, ann map[string]string) *cnpgv1.Cluster {
		a := map[string]string{dbspec.AnnotationRegister: "true"}
		for k, v := range ann {
			a[k] = v
		}
		return withUID(cluster("app", "pg", 1, a), uid)
	}
	tests := []struct {
		name        string
		cache, live []*cnpgv1.Cluster
		namespaces  []string
		// between runs after the collector's List, with the Fake.
		between     func(t *testing.T, f *teleporttest.Fake, db types.Database)
		wantDeleted bool
	}{
		{name: "Cluster gone", wantDeleted: true},
		{name: "Cluster opted out", cache: []*cnpgv1.Cluster{old}, live: []*cnpgv1.Cluster{old}, wantDeleted: true},
		{name: "Cluster opted out, our finalizer still on: its reconciler releases it",
			cache: []*cnpgv1.Cluster{withFinalizer(old)}, live: []*cnpgv1.Cluster{withFinalizer(old)}},
		{name: "another Cluster of the name holds our finalizer: not this db's",
			cache: []*cnpgv1.Cluster{withFinalizer(withUID(cluster("app", "pg", 1, nil), "new"))},
			live:  []*cnpgv1.Cluster{withFinalizer(withUID(cluster("app", "pg", 1, nil), "new"))}, wantDeleted: true},
		{name: "another Cluster of the name, not opted in",
			cache: []*cnpgv1.Cluster{withUID(cluster("app", "pg", 1, nil), "new")}, live: []*cnpgv1.Cluster{withUID(cluster("app", "pg", 1, nil), "new")}, wantDeleted: true},
		{name: "re-created, opted in under another name: not its db",
			cache: []*cnpgv1.Cluster{optedIn("new", map[string]string{dbspec.AnnotationName: "app-other"})}, live: []*cnpgv1.Cluster{optedIn("new", map[string]string{dbspec.AnnotationName: "app-other"})}, wantDeleted: true},
		{name: "still registered", cache: []*cnpgv1.Cluster{optedIn("old", nil)}, live: []*cnpgv1.Cluster{optedIn("old", nil)}},
		{name: "re-created and opted in, the cache has not seen it: the reconciler takes it over",
			live: []*cnpgv1.Cluster{optedIn("new", nil)}},
		{name: "re-created and taken over between List and Delete",
			live: []*cnpgv1.Cluster{optedIn("new", map[string]string{dbspec.AnnotationName: "app-other"})},
			between: func(t *testing.T, f *teleporttest.Fake, db types.Database) {
				// The reconciler of the new Cluster took the name over (and its
				// annotation has moved on since): it is the new Cluster's now.
				taken := db.Copy()
				l := taken.GetStaticLabels()
				l[dbspec.LabelClusterUID] = "new"
				taken.SetStaticLabels(l)
				if err := f.UpdateDatabase(context.Background(), taken); err != nil {
					t.Error(err)
				}
			}},
		{name: "keep set and register dropped in one edit",
			cache: []*cnpgv1.Cluster{withUID(cluster("app", "pg", 1, map[string]string{dbspec.AnnotationKeep: "true"}), "old")},
			live:  []*cnpgv1.Cluster{withUID(cluster("app", "pg", 1, map[string]string{dbspec.AnnotationKeep: "true"}), "old")}},
		{name: "keep invalid: the reconciler says so, nothing is guessed",
			cache: []*cnpgv1.Cluster{withUID(cluster("app", "pg", 1, map[string]string{dbspec.AnnotationKeep: "True"}), "old")},
			live:  []*cnpgv1.Cluster{withUID(cluster("app", "pg", 1, map[string]string{dbspec.AnnotationKeep: "True"}), "old")}},
		{name: "keep false", cache: []*cnpgv1.Cluster{withUID(cluster("app", "pg", 1, map[string]string{dbspec.AnnotationKeep: "false"}), "old")},
			live: []*cnpgv1.Cluster{withUID(cluster("app", "pg", 1, map[string]string{dbspec.AnnotationKeep: "false"}), "old")}, wantDeleted: true},
		{name: "namespace not watched: never gone", namespaces: []string{"other"}},
		{name: "namespace watched", namespaces: []string{"other", "app"}, wantDeleted: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := leastPrivilege()
			db := registeredDBs(t, old)[0]
			if err := f.Put(db); err != nil {
				t.Fatal(err)
			}
			if tt.between != nil {
				f.SetAfterHook(func(c teleporttest.Call) {
					if c.Method == "ListDatabases" {
						f.SetAfterHook(nil)
						tt.between(t, f, db)
					}
				})
			}
			cache := kube(t, tt.cache...)
			if tt.namespaces != nil {
				ns := map[string]bool{}
				for _, n := range tt.namespaces {
					ns[n] = true
				}
				cache = namespaced{cache, ns}
			}
			o := &OrphanCollector{Client: cache, APIReader: kube(t, tt.live...), Teleport: f, Options: opts, Namespaces: tt.namespaces}
			n, err := o.Collect(ctx)
			if err != nil {
				t.Fatalf("collect: %v", err)
			}
			_, stored := f.Stored(db.GetName())
			if stored == tt.wantDeleted || n != map[bool]int{true: 1}[tt.wantDeleted] {
				t.Fatalf("deleted %d, %s still stored: %v; want deleted %v", n, db.GetName(), stored, tt.wantDeleted)
			}
		})
	}
}

// withFinalizer returns a copy of c carrying the controller's finalizer.
func withFinalizer(c *cnpgv1.Cluster) *cnpgv1.Cluster {
	c = c.DeepCopy()
	c.Finalizers = append(c.Finalizers, Finalizer)
	return c
}

// TestCollectCountsOnlyItsOwnDeletes: the Cluster's finalizer deletes its db
// resource between the collector's List and its Delete while Teleport's
// reads still show it (the cache trails the backend): the pass finds it
// gone and neither counts nor logs it as an orphan it deleted.
func TestCollectCountsOnlyItsOwnDeletes(t *testing.T) {
	ctx := context.Background()
	f := leastPrivilege()
	db := registeredDBs(t, withUID(cluster("app", "pg", 1, nil), "old"))[0]
	if err := f.Put(db); err != nil {
		t.Fatal(err)
	}
	f.SetAfterHook(func(c teleporttest.Call) {
		if c.Method == "ListDatabases" {
			f.SetAfterHook(nil)
			f.SetReadLag(1) // the reads below still see it
			if err := f.DeleteDatabase(ctx, db.GetName()); err != nil {
				t.Error(err)
			}
		}
	})
	o := &OrphanCollector{Client: kube(t), APIReader: kube(t), Teleport: f, Options: opts}
	n, err := o.Collect(ctx)
	if err != nil || n != 0 {
		t.Fatalf("collect: deleted %d (%v), want 0: the finalizer deleted it", n, err)
	}
	var deletes []string
	for _, c := range f.Calls() {
		if c.Method == "DeleteDatabase" {
			deletes = append(deletes, c.Name+": "+fmt.Sprint(c.Err))
		}
	}
	if len(deletes) != 2 {
		t.Fatalf("deletes %v: want the finalizer's and the collector's (NotFound)", deletes)
	}
}
