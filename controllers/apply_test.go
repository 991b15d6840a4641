package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
	"k8s.io/client-go/tools/events"

	"github.com/cnpg-teleport/cnpg-teleport/teleport/teleporttest"
)

// testReconciler wires apply to a fake Teleport with the controller's
// least-privilege view (only its managed-by label) and a settable clock.
func testReconciler(f *teleporttest.Fake) (*ClusterReconciler, *events.FakeRecorder, *time.Time) {
	now := time.Unix(1_800_000_000, 0)
	rec := events.NewFakeRecorder(100)
	return &ClusterReconciler{Teleport: f, Recorder: rec, Options: opts, Now: func() time.Time { return now }}, rec, &now
}

func drain(rec *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func hasReason(evs []string, reason string) bool {
	for _, e := range evs {
		if strings.Contains(e, " "+reason+" ") {
			return true
		}
	}
	return false
}

func leastPrivilege() *teleporttest.Fake {
	return teleporttest.NewFake(teleporttest.FakeConfig{AllowedLabels: map[string]string{LabelManagedBy: ManagedByValue}})
}

func TestApplyStaleReadsNeitherDuplicateNorFlap(t *testing.T) {
	ctx := context.Background()
	f := leastPrivilege()
	f.SetReadLag(4) // reads trail every write of this test
	r, rec, now := testReconciler(f)
	c := cluster("app", "pg", 3, map[string]string{AnnotationRegister: "true"})
	desired, err := DesiredDatabases(opts, c, testCA(t, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	for pass := range 5 {
		if err := r.apply(ctx, c, desired); err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
		*now = now.Add(300 * time.Millisecond)
	}
	if f.Creates() != 2 || f.Updates() != 0 || f.Deletes() != 0 {
		t.Fatalf("writes: %d creates %d updates %d deletes; want 2 creates", f.Creates(), f.Updates(), f.Deletes())
	}
	evs := drain(rec)
	if hasReason(evs, ReasonNameConflict) || hasReason(evs, ReasonTeleportUnavailable) {
		t.Fatalf("stale reads reported as problems: %v", evs)
	}

	// Reads catch up; a CA change is then written once, even while reads
	// still show the old one.
	f.SetReadLag(0)
	if err := r.apply(ctx, c, desired); err != nil || f.Creates()+f.Updates() != 2 {
		t.Fatalf("caught-up steady state wrote: %v, %d writes", err, f.Creates()+f.Updates())
	}
	next, _ := DesiredDatabases(opts, c, testCA(t, "ca2"))
	for pass := range 3 {
		if err := r.apply(ctx, c, next); err != nil {
			t.Fatal(err)
		}
		if pass == 0 {
			f.SetReadLag(2) // the two updates are not visible to reads yet
		}
		*now = now.Add(300 * time.Millisecond)
	}
	if f.Updates() != 2 {
		t.Fatalf("updates = %d, want 2 (rw, ro once each)", f.Updates())
	}
}

func TestApplyForeignNameIsAConflictNotARetryLoop(t *testing.T) {
	ctx := context.Background()
	c := cluster("app", "pg", 1, map[string]string{AnnotationRegister: "true"})
	desired, err := DesiredDatabases(opts, c, testCA(t, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		foreign map[string]string
	}{
		{"hidden by the role (not our labels)", map[string]string{"owner": "someone"}},
		{"visible, our managed-by but another kube cluster", map[string]string{LabelManagedBy: ManagedByValue, LabelKubeCluster: "other"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := leastPrivilege()
			foreign, _ := types.NewDatabaseV3(types.Metadata{Name: desired[0].GetName(), Labels: tt.foreign},
				types.DatabaseSpecV3{Protocol: "postgres", URI: "elsewhere:5432"})
			if err := f.Put(foreign); err != nil {
				t.Fatal(err)
			}
			r, rec, _ := testReconciler(f)
			err := r.apply(ctx, c, desired)
			if !onlyConflicts(err) {
				t.Fatalf("want only a conflict, got %v", err)
			}
			if !hasReason(drain(rec), ReasonNameConflict) {
				t.Fatal("no NameConflict event")
			}
			got, _ := f.Stored(desired[0].GetName())
			if got.GetURI() != "elsewhere:5432" || f.Updates()+f.Deletes()+f.Creates() != 0 {
				t.Fatalf("the foreign db was touched: %s, %d writes", got.GetURI(), f.Updates()+f.Deletes()+f.Creates())
			}
		})
	}
}

func TestApplyTakesOverItsOwnPreviousIncarnation(t *testing.T) {
	ctx := context.Background()
	f := leastPrivilege()
	old := cluster("app", "pg", 1, map[string]string{AnnotationRegister: "true"})
	old.UID = "old-uid"
	prev, _ := DesiredDatabases(opts, old, testCA(t, "old"))
	if err := f.Put(prev[0]); err != nil {
		t.Fatal(err)
	}
	c := cluster("app", "pg", 1, map[string]string{AnnotationRegister: "true"}) // re-created: new UID
	desired, _ := DesiredDatabases(opts, c, testCA(t, "new"))
	r, rec, _ := testReconciler(f)
	if err := r.apply(ctx, c, desired); err != nil {
		t.Fatal(err)
	}
	got, _ := f.Stored(desired[0].GetName())
	if !OwnedByCluster(got, opts, c) || f.Updates() != 1 {
		t.Fatalf("not taken over: %v, %d updates", got.GetStaticLabels(), f.Updates())
	}
	if hasReason(drain(rec), ReasonNameConflict) {
		t.Fatal("a previous incarnation is not a conflict")
	}
}

func TestApplyTeleportDown(t *testing.T) {
	f := leastPrivilege()
	f.SetUnavailable(trace.ConnectionProblem(errors.New("refused"), "connection refused"))
	r, rec, _ := testReconciler(f)
	c := cluster("app", "pg", 1, map[string]string{AnnotationRegister: "true"})
	desired, _ := DesiredDatabases(opts, c, testCA(t, "ca"))
	err := r.apply(context.Background(), c, desired)
	if err == nil || onlyConflicts(err) || !trace.IsConnectionProblem(err) {
		t.Fatalf("want a retryable connection problem, got %v", err)
	}
	if !hasReason(drain(rec), ReasonTeleportUnavailable) {
		t.Fatal("no TeleportUnavailable event")
	}
}

func TestPersistentWarningsAreReportedOnce(t *testing.T) {
	f := leastPrivilege()
	f.SetUnavailable(trace.ConnectionProblem(errors.New("refused"), "connection refused"))
	r, rec, _ := testReconciler(f)
	c := cluster("app", "pg", 1, map[string]string{AnnotationRegister: "true"})
	desired, _ := DesiredDatabases(opts, c, testCA(t, "ca"))
	for range 5 {
		_ = r.apply(context.Background(), c, desired)
	}
	if n := len(drain(rec)); n != 1 {
		t.Fatalf("%d events for one persisting outage, want 1", n)
	}
	// Once a pass succeeds, a new outage is news again.
	f.SetUnavailable(nil)
	if err := r.apply(context.Background(), c, desired); err != nil {
		t.Fatal(err)
	}
	r.warned.clear(c)
	drain(rec)
	f.SetUnavailable(trace.ConnectionProblem(errors.New("refused"), "connection refused"))
	_ = r.apply(context.Background(), c, desired)
	if !hasReason(drain(rec), ReasonTeleportUnavailable) {
		t.Fatal("a new outage after recovery was not reported")
	}
}

func TestReleaseKeepLabelsWhatItLeaves(t *testing.T) {
	ctx := context.Background()
	f := leastPrivilege()
	// Registered before the keep annotation was set: no keep label yet.
	c := cluster("app", "pg", 3, map[string]string{AnnotationRegister: "true"})
	desired, _ := DesiredDatabases(opts, c, testCA(t, "ca"))
	for _, d := range desired {
		if err := f.Put(d); err != nil {
			t.Fatal(err)
		}
	}
	other := cluster("app", "other", 1, map[string]string{AnnotationRegister: "true"})
	theirs, _ := DesiredDatabases(opts, other, testCA(t, "ca"))
	if err := f.Put(theirs[0]); err != nil {
		t.Fatal(err)
	}
	c.Annotations[AnnotationKeep] = "true"
	r, rec, _ := testReconciler(f)
	all, _ := f.ListDatabases(ctx)
	if err := r.release(ctx, c, all); err != nil {
		t.Fatal(err)
	}
	for _, d := range desired {
		got, ok := f.Stored(d.GetName())
		if !ok || !Kept(got) {
			t.Fatalf("%s: kept=%v, present=%v", d.GetName(), ok && Kept(got), ok)
		}
	}
	if got, _ := f.Stored(theirs[0].GetName()); Kept(got) || f.Deletes() != 0 || f.Updates() != 2 {
		t.Fatalf("another Cluster's db touched, or wrong writes: %d updates %d deletes", f.Updates(), f.Deletes())
	}
	if !hasReason(drain(rec), ReasonKept) {
		t.Fatal("no Kept event")
	}
	// Without keep, only this Cluster's are deleted.
	delete(c.Annotations, AnnotationKeep)
	all, _ = f.ListDatabases(ctx)
	if err := r.release(ctx, c, all); err != nil {
		t.Fatal(err)
	}
	if names := f.StoredNames(); len(names) != 1 || names[0] != theirs[0].GetName() {
		t.Fatalf("left: %v", names)
	}
}
