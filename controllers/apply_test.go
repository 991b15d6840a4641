package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
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
	return teleporttest.NewFake(teleporttest.FakeConfig{AllowedLabels: map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue}})
}

func TestApplyStaleReadsNeitherDuplicateNorFlap(t *testing.T) {
	ctx := context.Background()
	f := leastPrivilege()
	f.SetReadLag(4) // reads trail every write of this test
	r, rec, now := testReconciler(f)
	c := cluster("app", "pg", 3, map[string]string{dbspec.AnnotationRegister: "true"})
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
	c := cluster("app", "pg", 1, map[string]string{dbspec.AnnotationRegister: "true"})
	desired, err := DesiredDatabases(opts, c, testCA(t, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		foreign map[string]string
	}{
		{"hidden by the role (not our labels)", map[string]string{"owner": "someone"}},
		{"visible, our managed-by but another kube cluster", map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue, dbspec.LabelKubeCluster: "other"}},
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
			if !waitsForAPerson(err) {
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
	old := cluster("app", "pg", 1, map[string]string{dbspec.AnnotationRegister: "true"})
	old.UID = "old-uid"
	prev, _ := DesiredDatabases(opts, old, testCA(t, "old"))
	if err := f.Put(prev[0]); err != nil {
		t.Fatal(err)
	}
	c := cluster("app", "pg", 1, map[string]string{dbspec.AnnotationRegister: "true"}) // re-created: new UID
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
	c := cluster("app", "pg", 1, map[string]string{dbspec.AnnotationRegister: "true"})
	desired, _ := DesiredDatabases(opts, c, testCA(t, "ca"))
	err := r.apply(context.Background(), c, desired)
	if err == nil || waitsForAPerson(err) || !trace.IsConnectionProblem(err) {
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
	c := cluster("app", "pg", 1, map[string]string{dbspec.AnnotationRegister: "true"})
	desired, _ := DesiredDatabases(opts, c, testCA(t, "ca"))
	for range 5 {
		_ = r.apply(context.Background(), c, desired)
	}
	if n := len(drain(rec)); n != 1 {
		t.Fatalf("%d events for one persisting outage, want 1", n)
	}
}

func TestReleaseKeepLabelsWhatItLeaves(t *testing.T) {
	ctx := context.Background()
	f := leastPrivilege()
	// Registered before the keep annotation was set: no keep label yet.
	c := cluster("app", "pg", 3, map[string]string{dbspec.AnnotationRegister: "true"})
	desired, _ := DesiredDatabases(opts, c, testCA(t, "ca"))
	for _, d := range desired {
		if err := f.Put(d); err != nil {
			t.Fatal(err)
		}
	}
	other := cluster("app", "other", 1, map[string]string{dbspec.AnnotationRegister: "true"})
	theirs, _ := DesiredDatabases(opts, other, testCA(t, "ca"))
	if err := f.Put(theirs[0]); err != nil {
		t.Fatal(err)
	}
	c.Annotations[dbspec.AnnotationKeep] = "true"
	r, rec, _ := testReconciler(f)
	all := listed(t, f)
	if err := r.release(ctx, c, KeepOnDelete(c), all); err != nil {
		t.Fatal(err)
	}
	for _, d := range desired {
		got, ok := f.Stored(d.GetName())
		if !ok || !dbspec.Kept(got) {
			t.Fatalf("%s: kept=%v, present=%v", d.GetName(), ok && dbspec.Kept(got), ok)
		}
	}
	if got, _ := f.Stored(theirs[0].GetName()); dbspec.Kept(got) || f.Deletes() != 0 || f.Updates() != 2 {
		t.Fatalf("another Cluster's db touched, or wrong writes: %d updates %d deletes", f.Updates(), f.Deletes())
	}
	if !hasReason(drain(rec), ReasonKept) {
		t.Fatal("no dbspec.Kept event")
	}
	// Without keep, only this Cluster's are deleted.
	delete(c.Annotations, dbspec.AnnotationKeep)
	all = listed(t, f)
	if err := r.release(ctx, c, KeepOnDelete(c), all); err != nil {
		t.Fatal(err)
	}
	if names := f.StoredNames(); len(names) != 1 || names[0] != theirs[0].GetName() {
		t.Fatalf("left: %v", names)
	}
}

// TestRefusedIsNotRetried: an answer retrying cannot change (AccessDenied,
// BadParameter) has its own reason and waits for the next resync; a lost
// connection is still retried with backoff.
func TestRefusedIsNotRetried(t *testing.T) {
	ctx := context.Background()
	c := cluster("app", "pg", 1, map[string]string{dbspec.AnnotationRegister: "true"})
	desired, _ := DesiredDatabases(opts, c, testCA(t, "ca"))
	for name, tt := range map[string]struct {
		err     error
		refused bool
	}{
		"AccessDenied":      {trace.AccessDenied("access to db denied"), true},
		"BadParameter":      {trace.BadParameter("database name %q is invalid", "x"), true},
		"ConnectionProblem": {trace.ConnectionProblem(errors.New("refused"), "connection refused"), false},
	} {
		t.Run(name, func(t *testing.T) {
			f := leastPrivilege()
			f.SetError("CreateDatabase", tt.err)
			r, rec, _ := testReconciler(f)
			r.Resync = time.Hour
			res, err := r.outcome(r.apply(ctx, c, desired))
			evs := drain(rec)
			if tt.refused {
				if err != nil || res.RequeueAfter != r.Resync || !hasReason(evs, ReasonTeleportRefused) || hasReason(evs, ReasonTeleportUnavailable) {
					t.Fatalf("result %+v, error %v, events %v: want a TeleportRefused wait for the resync", res, err, evs)
				}
				return
			}
			if err == nil || !hasReason(evs, ReasonTeleportUnavailable) {
				t.Fatalf("result %+v, error %v, events %v: want a retry", res, err, evs)
			}
		})
	}
}

// forbiddenReader answers every read with Kubernetes' 403.
type forbiddenReader struct{ client.Reader }

func (forbiddenReader) Get(_ context.Context, key client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, key.Name, errors.New("RBAC: not allowed"))
}

// TestSecretForbidden: a Secret the controller may not read is its own
// reason, not a missing CA, and waits for the resync (RBAC changes do not
// wake the controller) instead of the short dependency retry.
func TestSecretForbidden(t *testing.T) {
	ctx := context.Background()
	r, rec, _ := testReconciler(leastPrivilege())
	r.APIReader, r.Resync, r.Retry, r.TrustPoll = forbiddenReader{}, time.Hour, time.Second, time.Second
	c := cluster("app", "pg", 1, map[string]string{dbspec.AnnotationRegister: "true"})
	_, err := r.serverCA(ctx, c)
	res, rerr := r.waitForCA(c, err)
	evs := drain(rec)
	if rerr != nil || res.RequeueAfter != r.Resync || !hasReason(evs, ReasonSecretForbidden) || hasReason(evs, ReasonServerCAMissing) {
		t.Fatalf("server CA: result %+v, error %v, events %v: want SecretForbidden, a wait for the resync", res, rerr, evs)
	}
	res, rerr = r.trustOutcome(c, fmt.Errorf("the Cluster's client CA app/pg-ca: %w", err))
	evs = drain(rec)
	if rerr != nil || res.RequeueAfter != r.Resync || !hasReason(evs, ReasonSecretForbidden) {
		t.Fatalf("trust: result %+v, error %v, events %v: want SecretForbidden, a wait for the resync", res, rerr, evs)
	}
}

// TestReleaseDeletesWhatAStaleListDoesNotShow: a db resource created less
// than Teleport's read lag before the Cluster goes is deleted (or kept) in
// the same pass, not left to orphan collection.
func TestReleaseDeletesWhatAStaleListDoesNotShow(t *testing.T) {
	ctx := context.Background()
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			f := leastPrivilege()
			r, _, now := testReconciler(f)
			c := cluster("app", "pg", 3, map[string]string{dbspec.AnnotationRegister: "true"})
			desired, _ := DesiredDatabases(opts, c, testCA(t, "ca"))
			f.SetReadLag(len(desired) + 1) // the list below shows none of the creates
			if err := r.apply(ctx, c, desired); err != nil || f.Creates() != len(desired) {
				t.Fatalf("apply: %v, %d creates", err, f.Creates())
			}
			*now = now.Add(time.Second)
			all := listed(t, f)
			if len(all) != 0 {
				t.Fatalf("list = %v; want a stale, empty list", names(all))
			}
			if keep {
				c.Annotations[dbspec.AnnotationKeep] = "true"
			}
			if err := r.release(ctx, c, KeepOnDelete(c), all); err != nil {
				t.Fatal(err)
			}
			for _, d := range desired {
				got, stored := f.Stored(d.GetName())
				if stored != keep || (keep && !dbspec.Kept(got)) {
					t.Errorf("%s: stored %v (kept label %v), want stored and kept = %v", d.GetName(), stored, stored && dbspec.Kept(got), keep)
				}
			}
		})
	}
}

// TestApplyOneEventPerPass: a pass that registers rw, ro and r records one
// Registered Event naming all three, and a release one Deregistered Event:
// client-go folds a second Event of the same reason into a series that
// shows only the first note, which would hide every db after the first.
func TestApplyOneEventPerPass(t *testing.T) {
	ctx := context.Background()
	f := leastPrivilege()
	r, rec, now := testReconciler(f)
	c := cluster("app", "pg", 3, map[string]string{dbspec.AnnotationRegister: "true", dbspec.AnnotationEndpoints: "rw,ro,r"})
	desired, err := DesiredDatabases(opts, c, testCA(t, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	if len(desired) != 3 {
		t.Fatalf("desired %d db resources, want 3", len(desired))
	}
	if err := r.apply(ctx, c, desired); err != nil {
		t.Fatal(err)
	}
	evs := drain(rec)
	if len(evs) != 1 || !hasReason(evs, ReasonRegistered) {
		t.Fatalf("events %q, want one Registered", evs)
	}
	for _, d := range desired {
		if !strings.Contains(evs[0], d.GetName()+" (") {
			t.Errorf("the Registered Event does not name %s: %s", d.GetName(), evs[0])
		}
	}
	*now = now.Add(time.Minute)
	if err := r.release(ctx, c, false, desired); err != nil {
		t.Fatal(err)
	}
	evs = drain(rec)
	if len(evs) != 1 || !hasReason(evs, ReasonDeregistered) {
		t.Fatalf("events %q, want one Deregistered", evs)
	}
	for _, d := range desired {
		if !strings.Contains(evs[0], d.GetName()) {
			t.Errorf("the Deregistered Event does not name %s: %s", d.GetName(), evs[0])
		}
	}
}

// listed reads whole every db resource the fake lists (its list returns
// names and labels).
func listed(t *testing.T, f *teleporttest.Fake) []types.Database {
	t.Helper()
	metas, err := f.ListDatabases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []types.Database
	for _, m := range metas {
		db, err := f.GetDatabase(context.Background(), m.Name)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, db)
	}
	return out
}
