package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	"github.com/gravitational/teleport/api/types"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/time/rate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"

	"github.com/cnpg-teleport/cnpg-teleport/dbspec"
	"github.com/cnpg-teleport/cnpg-teleport/teleport/teleporttest"
)

// TestAgentCheck: a db no agent selects gets NoAgent once the bound has
// passed (not before, not twice), a served one AgentServing once; an agent
// that starts brings AgentServing back, one that leaves starts the bound
// again; the metric follows; a forgotten Cluster costs no Teleport call.
func TestAgentCheck(t *testing.T) {
	ctx := context.Background()
	f := teleporttest.NewFake(teleporttest.FakeConfig{AllowedLabels: map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue}})
	db := func(name, tier string) types.Database { return putAgentDB(t, f, name, "tier", tier) }
	rw, ro := db("k1-app-pg-rw", "a"), db("k1-app-pg-ro", "b")
	_ = db("k2-other-rw", "a") // another Kubernetes cluster's: not ours to check
	f.SetAgents(map[string]string{"tier": "a"})
	now := time.Unix(1000, 0)
	rec := events.NewFakeRecorder(20)
	a := &AgentCheck{Teleport: f, Recorder: rec, After: 30 * time.Second, Period: time.Second, Now: func() time.Time { return now },
		Labels: map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue, dbspec.LabelKubeCluster: "k1"}}
	c := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "pg", UID: "u1"}}
	a.Track(c, []types.Database{rw, ro})

	check := func(at time.Duration, want ...string) {
		t.Helper()
		now = time.Unix(1000, 0).Add(at)
		if err := a.Check(ctx); err != nil {
			t.Fatal(err)
		}
		var got []string
		for len(rec.Events) > 0 {
			e := <-rec.Events
			f := strings.Fields(e)
			got = append(got, f[1]+" "+f[2]) // reason, then the note's "db NAME" / "no ... db NAME"
			if f[1] == ReasonNoAgent && !strings.Contains(e, "tier=") {
				t.Errorf("NoAgent does not name the labels: %s", e)
			}
		}
		if strings.Join(got, "; ") != strings.Join(want, "; ") {
			t.Errorf("at %s: events %q, want %q", at, got, want)
		}
	}
	gauge := func(name string) float64 { return testutil.ToFloat64(agentsServing.WithLabelValues("app", "pg", name)) }

	check(0, "AgentServing db")
	if gauge(rw.GetName()) != 1 || gauge(ro.GetName()) != 0 {
		t.Errorf("gauges rw %v ro %v", gauge(rw.GetName()), gauge(ro.GetName()))
	}
	check(29 * time.Second)
	check(30*time.Second, "NoAgent no")
	check(60 * time.Second) // once
	f.SetAgents(map[string]string{"tier": "a"}, map[string]string{"tier": "b"}, map[string]string{"tier": "b"})
	check(61*time.Second, "AgentServing db")
	if gauge(ro.GetName()) != 2 {
		t.Errorf("ro gauge %v, want 2 agents", gauge(ro.GetName()))
	}
	f.SetAgents() // every agent leaves: the bound starts again
	check(62 * time.Second)
	check(91 * time.Second)
	check(92*time.Second, "NoAgent no", "NoAgent no")

	a.Track(c, []types.Database{rw}) // one instance left: ro is no longer registered
	if n := testutil.CollectAndCount(agentsServing); n != 1 {
		t.Errorf("%d series after ro went, want rw's only", n)
	}
	other := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "other", UID: "u2"}}
	a.Forget(other.UID) // another Cluster's deregistration leaves these alone
	if n := testutil.CollectAndCount(agentsServing); n != 1 {
		t.Errorf("%d series after another Cluster's Forget, want 1", n)
	}

	a.Forget(c.UID)
	if n := testutil.CollectAndCount(agentsServing); n != 0 {
		t.Errorf("%d series left after Forget", n)
	}
	calls := len(f.Calls())
	check(200 * time.Second)
	if len(f.Calls()) != calls {
		t.Errorf("Teleport called with nothing tracked")
	}
}

// TestAgentCheckPaced: the check records its Events at Pace's rate after it
// let go of its lock (a pass's Track never waits for them), and stops when
// its context ends, the metric already set for every db.
func TestAgentCheckPaced(t *testing.T) {
	f := teleporttest.NewFake(teleporttest.FakeConfig{AllowedLabels: map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue}})
	rec := events.NewFakeRecorder(10)
	a := &AgentCheck{Teleport: f, Recorder: rec, After: 30 * time.Second, Period: time.Second,
		Labels: map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue, dbspec.LabelKubeCluster: "k1"},
		Pace:   rate.NewLimiter(rate.Every(time.Hour), 1)} // one Event, then none for an hour
	// Three Clusters (one Event each: a Cluster's dbs share one), one db each.
	var clusters []*cnpgv1.Cluster
	var dbs []types.Database
	for _, name := range []string{"paced-a", "paced-b", "paced-c"} {
		d := putAgentDB(t, f, "k1-app-"+name+"-rw")
		c := &cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, UID: k8stypes.UID("u-" + name)}}
		a.Track(c, []types.Database{d})
		clusters, dbs = append(clusters, c), append(dbs, d)
	}
	f.SetAgents(map[string]string{dbspec.LabelKubeCluster: "k1"})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Check(ctx) }()
	select {
	case <-rec.Events: // the first, at once
	case <-time.After(10 * time.Second):
		t.Fatal("no Event")
	}
	tracked := make(chan struct{})
	go func() { a.Track(clusters[0], dbs[:1]); close(tracked) }()
	select {
	case <-tracked:
	case <-time.After(10 * time.Second):
		t.Fatal("Track waited for the check's paced Events")
	}
	for i, d := range dbs {
		if g := testutil.ToFloat64(agentsServing.WithLabelValues("app", clusters[i].Name, d.GetName())); g != 1 {
			t.Errorf("%s: gauge %v before its Event, want 1", d.GetName(), g)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Check = %v, want the context's end", err)
	}
	if len(rec.Events) != 0 {
		t.Errorf("%d more Events past the pace", len(rec.Events))
	}
	for _, c := range clusters {
		a.Forget(c.UID)
	}
}

// TestAgentServingOneEventPerCluster: the dbs of a Cluster one check finds
// served are one AgentServing, its action naming them all (client-go folds
// Events of one object, reason and action into a series showing the first
// note only); another Cluster's are its own Event; an action past 128
// characters (events.k8s.io's bound) falls back to one Event a db.
func TestAgentServingOneEventPerCluster(t *testing.T) {
	f := teleporttest.NewFake(teleporttest.FakeConfig{AllowedLabels: map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue}})
	put := func(name string) types.Database { return putAgentDB(t, f, name) }
	long := strings.Repeat("x", 55)
	byCluster := map[string][]types.Database{
		"pg":    {put("k1-app-pg-rw"), put("k1-app-pg-ro"), put("k1-app-pg-pooler-rw")},
		"other": {put("k1-app-other-rw")},
		long:    {put("k1-" + long + "-rw"), put("k1-" + long + "-ro")},
	}
	f.SetAgents(map[string]string{dbspec.LabelKubeCluster: "k1"})
	rec := &actionRecorder{}
	a := &AgentCheck{Teleport: f, Recorder: rec, After: 30 * time.Second, Period: time.Second,
		Labels: map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue, dbspec.LabelKubeCluster: "k1"}}
	for name, dbs := range byCluster {
		a.Track(&cnpgv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, UID: k8stypes.UID(name)}}, dbs)
	}
	if err := a.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"pg CheckAgent k1-app-pg-pooler-rw,k1-app-pg-ro,k1-app-pg-rw: dbs k1-app-pg-pooler-rw, k1-app-pg-ro, k1-app-pg-rw are served by Teleport database agents (k1-app-pg-pooler-rw by 1, k1-app-pg-ro by 1, k1-app-pg-rw by 1)",
		"other CheckAgent k1-app-other-rw: db k1-app-other-rw is served by 1 Teleport database agent(s)",
		long + " CheckAgent k1-" + long + "-ro: db k1-" + long + "-ro is served by 1 Teleport database agent(s)",
		long + " CheckAgent k1-" + long + "-rw: db k1-" + long + "-rw is served by 1 Teleport database agent(s)",
	}
	slices.Sort(want)
	slices.Sort(rec.got)
	if strings.Join(rec.got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(rec.got, "\n"), strings.Join(want, "\n"))
	}
	for _, e := range rec.got {
		if _, action, _ := strings.Cut(e, " "); len(strings.SplitN(action, ":", 2)[0]) > maxEventAction {
			t.Errorf("action over %d characters: %s", maxEventAction, e)
		}
	}
	if err := a.Check(context.Background()); err != nil || len(rec.got) != 4 {
		t.Errorf("a second check: %v, %d Events, want the same 4", err, len(rec.got))
	}
	for name := range byCluster {
		a.Forget(k8stypes.UID(name))
	}
}

// actionRecorder keeps each Event as "<cluster> <action>: <note>".
type actionRecorder struct {
	mu  sync.Mutex
	got []string
}

func (r *actionRecorder) Eventf(regarding, _ runtime.Object, _, _, action, note string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, regarding.(*cnpgv1.Cluster).Name+" "+action+": "+fmt.Sprintf(note, args...))
}

// putAgentDB puts into f a db resource of ours in Kubernetes cluster k1,
// with the extra labels given as key, value pairs.
func putAgentDB(t *testing.T, f *teleporttest.Fake, name string, labels ...string) types.Database {
	t.Helper()
	l := map[string]string{dbspec.LabelManagedBy: dbspec.ManagedByValue, dbspec.LabelKubeCluster: "k1"}
	for i := 0; i+1 < len(labels); i += 2 {
		l[labels[i]] = labels[i+1]
	}
	d, err := types.NewDatabaseV3(types.Metadata{Name: name, Labels: l}, types.DatabaseSpecV3{Protocol: "postgres", URI: "pg-rw.app.svc:5432"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Put(d); err != nil {
		t.Fatal(err)
	}
	return d
}
