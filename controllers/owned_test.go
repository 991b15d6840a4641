package controllers

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport/teleporttest"
)

// callsSince counts the fake's calls by method after the first n.
func callsSince(f *teleporttest.Fake, n int) map[string]int {
	out := map[string]int{}
	for _, c := range f.Calls()[n:] {
		out[c.Method]++
	}
	return out
}

// foreignDBs puts n db resources of other Kubernetes clusters into f, all
// visible to the controller's identity (the fake's role sees every
// managed-by db): what a large shared Teleport holds.
func foreignDBs(t *testing.T, f *teleporttest.Fake, n int) {
	t.Helper()
	other := opts
	other.KubeCluster, other.KubeClusterID = "other", "id-other"
	for i := range n {
		c := cluster("team", fmt.Sprintf("db%d", i), 1, map[string]string{dbspec.AnnotationRegister: "true"})
		dbs, err := DesiredDatabases(other, c, testCA(t, "ca"))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Put(dbs[0]); err != nil {
			t.Fatal(err)
		}
	}
}

// TestApplyReadsByName: after the index is filled by one list, a pass of a
// registered Cluster reads its names one by one and lists nothing, so its
// Teleport reads are the same with 100 or 2,000 other db resources in
// Teleport; and an idle pass writes nothing.
func TestApplyReadsByName(t *testing.T) {
	ctx := context.Background()
	var perPass []map[string]int
	for _, foreign := range []int{100, 2000} {
		f := leastPrivilege()
		foreignDBs(t, f, foreign)
		r, _, now := testReconciler(f)
		c := cluster("app", "pg", 3, map[string]string{dbspec.AnnotationRegister: "true"})
		desired, err := DesiredDatabases(opts, c, testCA(t, "ca"))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.apply(ctx, c, desired); err != nil {
			t.Fatal(err)
		}
		first := callsSince(f, 0)
		if first["ListDatabases"] != 1 {
			t.Fatalf("first pass: %d lists, want the one that fills the index", first["ListDatabases"])
		}
		*now = now.Add(time.Minute) // past the read lag
		n := len(f.Calls())
		for range 5 {
			if err := r.apply(ctx, c, desired); err != nil {
				t.Fatal(err)
			}
		}
		got := callsSince(f, n)
		if got["ListDatabases"] != 0 || got["CreateDatabase"]+got["UpdateDatabase"]+got["DeleteDatabase"] != 0 {
			t.Fatalf("%d foreign: 5 idle passes made %v; want no list and no write", foreign, got)
		}
		if got["GetDatabase"] != 5*len(desired) {
			t.Fatalf("%d foreign: 5 passes read %d db resources, want %d (its own names)", foreign, got["GetDatabase"], 5*len(desired))
		}
		perPass = append(perPass, got)
	}
	t.Logf("Teleport calls of 5 idle passes, with 100 and with 2,000 foreign db resources: %v", perPass)
}

// TestApplyAfterRestartRemovesStaleNames: a new process (an empty index)
// finds, through the one list that fills it, the db resources the Cluster
// no longer wants (an old name prefix, a Pooler gone) and deletes them,
// while a foreign one stays.
func TestApplyAfterRestartRemovesStaleNames(t *testing.T) {
	ctx := context.Background()
	f := leastPrivilege()
	foreignDBs(t, f, 3)
	c := cluster("app", "pg", 1, map[string]string{dbspec.AnnotationRegister: "true", dbspec.AnnotationName: "app-old"})
	old, err := DesiredDatabases(opts, c, testCA(t, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range old {
		if err := f.Put(db); err != nil {
			t.Fatal(err)
		}
	}
	c.Annotations[dbspec.AnnotationName] = "app-new"
	desired, err := DesiredDatabases(opts, c, testCA(t, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	r, rec, _ := testReconciler(f) // a fresh process: nothing indexed
	if err := r.apply(ctx, c, desired); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Stored("app-old-rw"); ok {
		t.Fatalf("app-old-rw left after the prefix changed: %v", f.StoredNames())
	}
	if _, ok := f.Stored("app-new-rw"); !ok {
		t.Fatalf("app-new-rw not registered: %v", f.StoredNames())
	}
	if n := len(f.StoredNames()); n != 4 {
		t.Fatalf("stored %v; want app-new-rw and the 3 foreign ones", f.StoredNames())
	}
	if !hasReason(drain(rec), ReasonDeregistered) {
		t.Fatal("the stale name's removal was not reported")
	}
}

// TestApplyKeepsLookingForAWriteWithinTheReadLag: a name created and then
// no longer wanted while reads do not show it yet is still read (and
// deleted) once they do: the index keeps what this process wrote.
func TestApplyKeepsLookingForAWriteWithinTheReadLag(t *testing.T) {
	ctx := context.Background()
	f := leastPrivilege()
	r, _, now := testReconciler(f)
	c := cluster("app", "pg", 2, map[string]string{dbspec.AnnotationRegister: "true"})
	two, err := DesiredDatabases(opts, c, testCA(t, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	f.SetReadLag(2) // the rw and ro creates stay invisible to reads
	if err := r.apply(ctx, c, two); err != nil {
		t.Fatal(err)
	}
	one := slices.DeleteFunc(slices.Clone(two), func(d types.Database) bool { return d.GetStaticLabels()[dbspec.LabelEndpoint] == "ro" })
	*now = now.Add(time.Second)
	if err := r.apply(ctx, c, one); err != nil { // ro unwanted, and not readable yet
		t.Fatal(err)
	}
	f.SetReadLag(0)
	*now = now.Add(time.Minute)
	if err := r.apply(ctx, c, one); err != nil {
		t.Fatal(err)
	}
	if names := f.StoredNames(); len(names) != 1 || names[0] != one[0].GetName() {
		t.Fatalf("stored %v; want only %s (ro removed once reads showed it)", names, one[0].GetName())
	}
}

// TestApplyTakenOverNameStaysIndexed: a Cluster re-created under its name
// takes its predecessor's db resources over; when it later stops wanting
// one (here ro, scaled down), the next pass deletes it, with no orphan pass
// in between: the taken-over name is indexed under the new UID.
func TestApplyTakenOverNameStaysIndexed(t *testing.T) {
	ctx := context.Background()
	f := leastPrivilege()
	old := cluster("app", "pg", 2, map[string]string{dbspec.AnnotationRegister: "true"})
	before, err := DesiredDatabases(opts, old, testCA(t, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range before {
		if err := f.Put(db); err != nil {
			t.Fatal(err)
		}
	}
	r, _, now := testReconciler(f)
	r.index().seed(nil, opts) // the index is complete and empty: nothing listed it for the new UID
	c := withUID(old, "new")
	desired, err := DesiredDatabases(opts, c, testCA(t, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.apply(ctx, c, desired); err != nil {
		t.Fatal(err)
	}
	if f.Updates() != 2 {
		t.Fatalf("%d updates, want rw and ro taken over", f.Updates())
	}
	*now = now.Add(time.Minute)
	c.Spec.Instances = 1
	one, err := DesiredDatabases(opts, c, testCA(t, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.apply(ctx, c, one); err != nil {
		t.Fatal(err)
	}
	if names := f.StoredNames(); len(names) != 1 || names[0] != one[0].GetName() {
		t.Fatalf("stored %v; want only %s", names, one[0].GetName())
	}
}

// TestApplyNewClusterCreatesWithoutReading: a Cluster the complete index
// records nothing for is registered with its creates alone; a name another
// owner holds (visible) costs that Cluster one failed create in this
// process, then is read like any other (no create a resync), and stays
// untouched; a db resource of its own that the index missed is compared
// and updated.
func TestApplyNewClusterCreatesWithoutReading(t *testing.T) {
	ctx := context.Background()
	f := leastPrivilege()
	foreignDBs(t, f, 50)
	r, rec, now := testReconciler(f)
	seed := cluster("app", "seed", 1, map[string]string{dbspec.AnnotationRegister: "true"})
	if err := r.apply(ctx, seed, mustDesired(t, seed, "ca")); err != nil { // fills the index
		t.Fatal(err)
	}

	c := cluster("app", "pg", 3, map[string]string{dbspec.AnnotationRegister: "true"})
	desired := mustDesired(t, c, "ca")
	n := len(f.Calls())
	if err := r.apply(ctx, c, desired); err != nil {
		t.Fatal(err)
	}
	if got := callsSince(f, n); got["GetDatabase"] != 0 || got["ListDatabases"] != 0 || got["CreateDatabase"] != len(desired) {
		t.Fatalf("a new Cluster's first pass made %v; want %d creates and no read", got, len(desired))
	}
	*now = now.Add(time.Minute)
	n = len(f.Calls())
	if err := r.apply(ctx, c, desired); err != nil {
		t.Fatal(err)
	}
	if got := callsSince(f, n); got["GetDatabase"] != len(desired) || got["CreateDatabase"]+got["UpdateDatabase"] != 0 {
		t.Fatalf("its next pass made %v; want its %d names read and nothing written", got, len(desired))
	}

	// Another owner's db (visible: another Kubernetes cluster's) holds the
	// rw name of a new Cluster.
	taken := cluster("app", "taken", 1, map[string]string{dbspec.AnnotationRegister: "true"})
	want := mustDesired(t, taken, "ca")
	foreign, _ := types.NewDatabaseV3(types.Metadata{Name: want[0].GetName(), Labels: map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue, dbspec.LabelKubeCluster: "other"}},
		types.DatabaseSpecV3{Protocol: "postgres", URI: "elsewhere:5432"})
	if err := f.Put(foreign); err != nil {
		t.Fatal(err)
	}
	n = len(f.Calls())
	for range 4 {
		if err := r.apply(ctx, taken, want); !waitsForAPerson(err) {
			t.Fatalf("want only a conflict, got %v", err)
		}
		*now = now.Add(time.Minute)
	}
	if got := callsSince(f, n); got["CreateDatabase"] != 1 {
		t.Fatalf("4 passes over a taken name made %v; want 1 create (the first pass's)", got)
	}
	if got, _ := f.Stored(want[0].GetName()); got.GetURI() != "elsewhere:5432" {
		t.Fatalf("the foreign db was touched: %s", got.GetURI())
	}
	if !hasReason(drain(rec), ReasonNameConflict) {
		t.Fatal("no NameConflict event")
	}

	// Its own db resource, with an old CA, that the index does not record
	// (Teleport's list trailed the create that made it).
	own := cluster("app", "own", 1, map[string]string{dbspec.AnnotationRegister: "true"})
	old := mustDesired(t, own, "old-ca")
	if err := f.Put(old[0]); err != nil {
		t.Fatal(err)
	}
	updates := f.Updates()
	if err := r.apply(ctx, own, mustDesired(t, own, "new-ca")); err != nil {
		t.Fatal(err)
	}
	if f.Updates() != updates+1 {
		t.Fatalf("%d updates; want its own db resource updated to the new CA", f.Updates()-updates)
	}
	if hasReason(drain(rec), ReasonNameConflict) {
		t.Fatal("its own db resource was reported as a conflict")
	}
}

func mustDesired(t *testing.T, c *cnpgv1.Cluster, ca string) []types.Database {
	t.Helper()
	dbs, err := DesiredDatabases(opts, c, testCA(t, ca))
	if err != nil {
		t.Fatal(err)
	}
	return dbs
}
